//! `berth serve`: checks the serve flags, builds the controller (wiring.rs), the autoscaler's
//! settings, the webhook listener, the notifier and the status API, and hands them to
//! `daemon::run` with one shutdown token that SIGTERM, Ctrl-C or a SIGHUP with a valid config
//! fires (`shutdown_signal` in main.rs); after a reload, `reexec` starts the same binary
//! again in place (same pid).
//! Must not touch: the flags (cli.rs), which long-running tasks exist and how they stop
//! (daemon.rs), any decision (the library).

use crate::cli::ServeArgs;
use crate::shutdown_signal;
use crate::wiring::{controller, lease_settings};
use anyhow::{bail, Context, Result};
use berth::api::{self, ApiConfig};
use berth::autoscale::policy::PolicyConfig;
use berth::autoscale::AutoscaleSettings;
use berth::daemon::{self, Daemon};
use berth::runtime::ContainerRuntime;
use berth::source;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Serves until SIGTERM/Ctrl-C (false) or a SIGHUP with a valid config (true: re-exec).
pub(crate) async fn serve<R: ContainerRuntime>(args: &ServeArgs, runtime: R) -> Result<bool> {
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

/// Replaces this process with the same binary and arguments (the config file is read
/// again). Returns only when exec failed.
pub(crate) fn reexec() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .exec();
    anyhow::anyhow!("cannot restart berth for the reload: {error}; start it again")
}
