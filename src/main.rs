//! The `berth` command line: validate, plan, apply --once, serve (with the status API;
//! SIGHUP re-executes it with the re-read config), status, schema, volumes, doctor, config show,
//! completions, man; the config file layered under the flags (config.rs); logging (human
//! or JSON lines on stderr, always redacted). The only place that uses anyhow (with its
//! binary-private modules); everything it does is a thin call into the library.
//! This file: `main`, logging, `run` (which command runs) and the signals `serve` stops or
//! reloads on. What a command does lives in commands.rs (apply, plan, validate, status,
//! logs, volumes), serve.rs (serve) and doctor.rs; the controller and the settings built
//! from the flags in wiring.rs.
//! Must not touch: what a command does, beyond the few lines of the small ones (config
//! show, completions, man, schema) and the choice of backend.

use anyhow::{Context, Result};
use berth::runtime::docker::DockerRuntime;
use berth::runtime::swarm::SwarmRuntime;
use berth::spec;
use clap::{CommandFactory, FromArgMatches};
use cli::{BackendArg, Cli, Command, ConfigCommand, LogFormat, Output};
use commands::{apply, logs, plan, status, validate, volumes};
use serve::{reexec, serve};
use std::process::ExitCode;
use std::time::Duration;
use wiring::{controller, lease_settings};

mod cli;
mod commands;
mod config;
mod doctor;
mod serve;
mod wiring;

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

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
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
