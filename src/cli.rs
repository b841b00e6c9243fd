//! The command line's shape: clap types for every subcommand and its flags, with their
//! help texts and defaults. Must not touch: what the commands do (main.rs, commands.rs,
//! serve.rs).

use berth::api;
use berth::source;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Declarative reconciler for one Docker host: App specs in, containers behind nginx out"
)]
pub(crate) struct Cli {
    /// Log format on stderr: human-readable lines, or one JSON object per line
    /// (timestamp, level, fields, target, spans). Secrets are redacted in both.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub(crate) log_format: LogFormat,
    /// Config file whose keys are the long flags of `berth serve` (flag > env > file >
    /// default) [default: /etc/berth/berth.toml when it exists; `none`: no file].
    #[arg(long, global = true, env = "BERTH_CONFIG", value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Check spec files or directories; lists every problem with file:line:column and field.
    /// Exit 0 when all are valid, 1 otherwise.
    Validate {
        /// Spec files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Host directory specs may mount with `hostPath` (repeatable; none by default).
        #[arg(long = "allow-host-path", value_name = "PREFIX", value_parser = host_path_prefix)]
        allow_host_path: Vec<String>,
        /// Registry images may come from, as `serve` is given (repeatable; none: any).
        #[arg(long = "allow-registry", value_name = "HOST", value_parser = registry_host)]
        allow_registry: Vec<String>,
        /// Directory `route.tls` certificates and keys may be read from, as `serve` is given
        /// (repeatable; none by default, which refuses every `route.tls`). The files are read
        /// and checked as a pass would: PEM, key matches certificate, validity.
        #[arg(long = "allow-tls-dir", value_name = "DIR", value_parser = tls_dir)]
        allow_tls_dir: Vec<std::path::PathBuf>,
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
    /// SIGHUP re-reads the config file and restarts berth in place (same pid).
    Serve {
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Check that this host is ready for `berth serve` with the same flags and config file:
    /// one line per check saying what to fix. Exit 0 when every check passes, 1 otherwise.
    Doctor {
        #[command(flatten)]
        serve: ServeArgs,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The config file: `berth config show` prints the effective configuration of `berth
    /// serve` (secrets redacted) and where each value came from (flag, env, file, default).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write berth's man pages (berth.1 and one per subcommand) into DIR.
    #[command(hide = true)]
    Man {
        /// Directory the pages are written into (created if missing).
        dir: PathBuf,
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
    /// Print an app's container logs (every replica, `CONTAINER | line`, secrets redacted)
    /// through the running `berth serve`'s API.
    Logs {
        app: String,
        /// Keep printing new lines until Ctrl-C or until every replica stops.
        #[arg(short, long)]
        follow: bool,
        /// Newest lines per replica (1 to 10000).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        tail: u32,
        /// Only lines since then: a duration (90s, 15m, 2h, 7d) or unix milliseconds.
        #[arg(long)]
        since: Option<String>,
        /// Address of the status API (`--api-listen` of `berth serve`).
        #[arg(long, env = "BERTH_API", default_value = api::DEFAULT_LISTEN)]
        api: String,
        /// File whose first line is the API's bearer token (default: $BERTH_API_TOKEN).
        #[arg(long)]
        api_token_file: Option<PathBuf>,
    },
    /// berth's named volumes (`berth-<app>-<name>`): list them, or delete a removed app's.
    Volumes {
        #[command(subcommand)]
        command: VolumesCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum VolumesCommand {
    /// List berth's volumes (of one app, or all).
    Ls {
        app: Option<String>,
        /// Only volumes labelled berth.instance=<NAME>.
        #[arg(long, env = "BERTH_INSTANCE")]
        instance: Option<String>,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Delete the volumes of an app that is no longer in the source (its data is lost).
    /// Asks on a terminal unless --yes; refuses while the app is in the source or still has
    /// containers.
    Prune {
        app: String,
        /// Do not ask (needed without a terminal).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        common: Box<Common>,
    },
}

/// `--allow-host-path`: an absolute, normalized directory other than `/`.
/// `--allow-registry`: a registry host as image references name it (`host`, `host:port`),
/// lowercase letters, digits, `.`, `-`, one optional `:port`.
pub(crate) fn registry_host(s: &str) -> Result<String, String> {
    let (host, port) = match s.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if host_ok && port_ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "--allow-registry {s:?}: give a registry host as image references name it, e.g. registry.example.com, localhost:5000 or docker.io"
        ))
    }
}

/// `validate --allow-tls-dir`: the same rule as `serve`'s (`tls::parse_allowed_dir`).
pub(crate) fn tls_dir(s: &str) -> Result<std::path::PathBuf, String> {
    berth::reconcile::tls::parse_allowed_dir("--allow-tls-dir", s)
}

pub(crate) fn host_path_prefix(s: &str) -> Result<String, String> {
    if let Some(problem) = berth::spec::path_problem(s) {
        return Err(format!("--allow-host-path {problem}"));
    }
    if s == "/" {
        return Err(
            "--allow-host-path / would let a spec mount any host file: name a narrower directory"
                .to_string(),
        );
    }
    Ok(s.to_string())
}

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the effective configuration of `berth serve` with these flags: one `key =
    /// value` line per serve flag and where it came from (flag, env, file:line, default).
    Show {
        #[command(flatten)]
        serve: ServeArgs,
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// Every flag of `berth serve`; each long flag is also a key of the config file (derived
/// from these definitions by `config.rs`: a new flag here is a new key with no other code).
#[derive(Args, Clone)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Seconds between timer-driven passes.
    #[arg(long, default_value_t = 5)]
    pub(crate) interval: u64,
    /// Listen for push webhooks (POST /hooks/git, HMAC-SHA256 signed as GitHub or Gitea
    /// send it) on this address; a valid call polls the git source at once.
    #[arg(long)]
    pub(crate) webhook_listen: Option<String>,
    /// Env var holding the webhook's shared secret (at least 16 bytes).
    #[arg(long, default_value = "BERTH_WEBHOOK_SECRET")]
    pub(crate) webhook_secret_env: String,
    /// Seconds a stop (SIGTERM, Ctrl-C) waits for the pass in flight to finish.
    #[arg(long, default_value_t = 30)]
    pub(crate) shutdown_timeout: u64,
    #[command(flatten)]
    pub(crate) api: ApiServe,
    #[command(flatten)]
    pub(crate) autoscale: AutoscaleArgs,
    #[command(flatten)]
    pub(crate) notify: NotifyArgs,
}

/// The read-only status API next to the loop.
#[derive(Args, Clone)]
pub(crate) struct ApiServe {
    /// Address of the read-only status API and /metrics; `off` disables it.
    #[arg(long, env = "BERTH_API_LISTEN", default_value = api::DEFAULT_LISTEN)]
    pub(crate) api_listen: String,
    /// File whose first line is the bearer token every API route then requires
    /// (default: $BERTH_API_TOKEN; neither set: no token).
    #[arg(long)]
    pub(crate) api_token_file: Option<PathBuf>,
}

/// Outgoing notifications (JSON POSTs, HMAC-signed with $BERTH_NOTIFY_SECRET when set).
#[derive(Args, Clone)]
pub(crate) struct NotifyArgs {
    /// POST a JSON notification here for each chosen event (repeat the flag, or give a
    /// comma-separated list in the env var); retried with backoff, never blocking a pass.
    #[arg(long, env = "BERTH_NOTIFY_URL", value_delimiter = ',')]
    pub(crate) notify_url: Vec<String>,
    /// Which events to send: rollout-failed, quarantined, crash-looping, prune-refused,
    /// source-degraded, source-recovered, scaling, or all (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    pub(crate) notify_on: Vec<String>,
}

/// The autoscaler (apps with `scaling.policy.mode: auto`).
#[derive(Args, Clone)]
pub(crate) struct AutoscaleArgs {
    /// Seconds between autoscaler ticks (fractions allowed).
    #[arg(long, default_value_t = 15.0, value_parser = positive_seconds)]
    pub(crate) autoscale_tick: f64,
    /// Do not run the autoscaler (overrides already in the store still apply).
    #[arg(long)]
    pub(crate) no_autoscale: bool,
    /// Scale-in stabilization window in seconds [default: each app's windowSeconds].
    #[arg(long)]
    pub(crate) autoscale_stabilization: Option<u32>,
    /// nginx access log in berth's JSON log_format, for production mode (the private
    /// nginx's own log is used by default).
    #[arg(long)]
    pub(crate) autoscale_access_log: Option<PathBuf>,
}

pub(crate) fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0.1 and 86400"
        )),
    }
}

#[derive(Args, Clone)]
pub(crate) struct Common {
    /// Directory (or file) holding App specs (default examples/apps unless --git is given).
    #[arg(long, conflicts_with = "git")]
    pub(crate) dir: Option<PathBuf>,
    /// Git repository holding App specs: a local path, file://, https:// (token from the
    /// env var named by --git-token-env) or ssh (key from --git-ssh-key).
    #[arg(long, env = "BERTH_GIT")]
    pub(crate) git: Option<String>,
    /// Branch of the --git repository.
    #[arg(long, default_value = "main")]
    pub(crate) branch: String,
    /// Directory (or file) inside the --git repository holding the specs (default: the
    /// repository root).
    #[arg(long)]
    pub(crate) path: Option<PathBuf>,
    /// Seconds between polls of the --git repository.
    #[arg(long, default_value_t = 15)]
    pub(crate) poll: u64,
    /// Env var holding an https token for the --git repository.
    #[arg(long, default_value = source::git::DEFAULT_TOKEN_ENV)]
    pub(crate) git_token_env: String,
    /// Private key (no passphrase) for an ssh --git URL.
    #[arg(long, env = "BERTH_GIT_SSH_KEY")]
    pub(crate) git_ssh_key: Option<PathBuf>,
    /// known_hosts file (OpenSSH format, hashed names allowed) holding the ssh --git
    /// server's host key (default: ~/.ssh/known_hosts when it exists). An unknown or
    /// changed host key is refused.
    #[arg(long, env = "BERTH_GIT_KNOWN_HOSTS")]
    pub(crate) git_known_hosts: Option<PathBuf>,
    /// Extra CA (PEM) trusted for an https --git URL, besides the system CAs (for a Gitea or
    /// GitLab behind a private CA).
    #[arg(long, env = "BERTH_GIT_CA_FILE")]
    pub(crate) git_ca_file: Option<PathBuf>,
    /// Most apps one pass may remove; a pass that would remove more removes none and
    /// records a prune-refused event.
    #[arg(long, default_value_t = 2)]
    pub(crate) max_prune: u32,
    /// Most apps one pass may remove, as a percentage of the apps present.
    #[arg(long, default_value_t = 50)]
    pub(crate) max_prune_percent: u32,
    /// Lift the deletion budget: remove every app that left the source, even all of them.
    #[arg(long, env = "BERTH_ALLOW_MASS_PRUNE")]
    pub(crate) allow_mass_prune: bool,
    /// Where berth keeps its SQLite store and its private nginx.
    #[arg(long, env = "BERTH_STATE_DIR", default_value = ".berth")]
    pub(crate) state_dir: PathBuf,
    /// The store: sqlite://PATH (default: berth.db in --state-dir) or
    /// postgres://USER@HOST:PORT/DATABASE, which several controllers may share (one leads,
    /// by a lease). Keep the password out of the URL: PGPASSWORD is read.
    #[arg(long, env = "BERTH_STORE", value_name = "URL")]
    pub(crate) store: Option<String>,
    /// This controller's id in the leader lease (default: host name, pid and a random
    /// suffix). Must differ between controllers.
    #[arg(long, env = "BERTH_CONTROLLER_ID")]
    pub(crate) controller_id: Option<String>,
    /// Seconds a leader lease lasts (PostgreSQL store): a dead leader is replaced within
    /// this plus one renewal.
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
    pub(crate) lease_duration: f64,
    /// Seconds between lease renewals (and a follower's takeover attempts); less than a
    /// third of --lease-duration leaves room for two failed renewals.
    #[arg(long, default_value_t = 3.0, value_parser = positive_seconds)]
    pub(crate) lease_renew: f64,
    /// Address the private nginx listens on.
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: String,
    /// Address the private nginx serves `route.tls` hosts on (HTTPS).
    #[arg(long, env = "BERTH_LISTEN_TLS", default_value = "127.0.0.1:8443")]
    pub(crate) listen_tls: String,
    /// Directory route certificates and keys (`route.tls`) may be read from: absolute,
    /// normalized; repeat for more. None by default, which refuses every `route.tls`.
    #[arg(long, value_name = "DIR")]
    pub(crate) allow_tls_dir: Vec<String>,
    /// nginx binary for the private proxy.
    #[arg(long, env = "BERTH_NGINX", default_value = "nginx")]
    pub(crate) nginx_binary: PathBuf,
    /// Production mode: write per-app files into this directory of an nginx you run
    /// (include DIR/*.conf at http level and DIR/*.loc inside your server) instead of
    /// starting berth's private nginx.
    #[arg(long)]
    pub(crate) nginx_conf_dir: Option<PathBuf>,
    /// How upstream members reach nginx: `dynamic` pushes them to nginx's Lua balancer
    /// (no reload on a rollout, heal or scaling step; needs libnginx-mod-http-lua and
    /// lua-resty-core), `reload` rewrites the app's upstream and reloads nginx. Default:
    /// dynamic when the private nginx can load the Lua module (else reload, with a
    /// warning); reload with --nginx-conf-dir (see README: the snippet your nginx needs).
    #[arg(long, env = "BERTH_PROXY_MODE", value_enum)]
    pub(crate) proxy_mode: Option<ProxyModeArg>,
    /// Production mode: command that checks the config (split on spaces).
    #[arg(long, default_value = "nginx -t")]
    pub(crate) nginx_test_command: String,
    /// Production mode: command that reloads nginx (split on spaces).
    #[arg(long, default_value = "nginx -s reload")]
    pub(crate) nginx_reload_command: String,
    /// Where apps run: `docker` (containers on this host) or `swarm` (one Docker Swarm
    /// service per app; the engine must be a swarm manager). Never run both backends on
    /// the same apps: see README, "Moving between backends".
    #[arg(long, env = "BERTH_BACKEND", value_enum, default_value_t = BackendArg::Docker)]
    pub(crate) backend: BackendArg,
    /// Docker network every container joins (the swarm backend's services join the
    /// attachable overlay `<NAME>-swarm`).
    #[arg(long, default_value = "berth")]
    pub(crate) network: String,
    /// Only manage containers labelled berth.instance=<NAME> (several controllers on one host).
    #[arg(long, env = "BERTH_INSTANCE")]
    pub(crate) instance: Option<String>,
    /// Container creates + starts at the same time; up to four times as many apps apply
    /// their steps at once (e.g. new containers waiting on their health gate).
    #[arg(long, default_value_t = 8)]
    pub(crate) parallel: usize,
    /// KEY=VALUE file with values for `valueFrom: sdk` env vars (berth's own environment
    /// is used too; the file wins).
    #[arg(long)]
    pub(crate) host_env: Option<PathBuf>,
    /// Seconds a container gets between SIGTERM and SIGKILL (an app's
    /// `termination.gracePeriodSeconds` wins).
    #[arg(long, default_value_t = 10)]
    pub(crate) stop_timeout: u32,
    /// Host directory specs may mount with `hostPath` (repeatable; none by default, and
    /// never the Docker socket). Specs come from git: allow only what they may read/write.
    #[arg(long = "allow-host-path", value_name = "PREFIX", value_parser = host_path_prefix)]
    pub(crate) allow_host_path: Vec<String>,
    /// Registry images may come from (`registry.example.com`, `localhost:5000`, `docker.io`
    /// for Docker Hub; repeatable). None given: any registry. A spec naming another
    /// registry is an issue on `spec.image` and the app stays on its last good spec.
    #[arg(long = "allow-registry", value_name = "HOST", value_parser = registry_host)]
    pub(crate) allow_registry: Vec<String>,
    /// serve: days of events, scaling decisions and revisions to keep (0: no age limit).
    #[arg(long, default_value_t = 30)]
    pub(crate) history_days: u32,
    /// serve: most rows kept per history table, newest first (0: no row limit).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) history_rows: u64,
    /// Docker client config directory whose config.json holds registry credentials
    /// (auths, credsStore, credHelpers) [default: $DOCKER_CONFIG, else ~/.docker].
    #[arg(long, env = "BERTH_DOCKER_CONFIG")]
    pub(crate) docker_config: Option<PathBuf>,
    /// Seconds between registry digest checks of `imagePullPolicy: Always` images (a moved
    /// tag is pulled and rolled out).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) image_poll: u64,
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BackendArg {
    Docker,
    Swarm,
}

/// `--proxy-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ProxyModeArg {
    Dynamic,
    Reload,
}
