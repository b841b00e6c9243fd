//! The one-shot commands: `apply --once`, `plan`, `validate`, `volumes ls|prune` (the
//! prompt) on this host, and `status` and `logs`, clients of a running berth's API. Each
//! prints its answer and returns the exit code.
//! Must not touch: `serve` (serve.rs), how the controller and its settings are built from
//! the flags (wiring.rs), what may be pruned and the deletion (`reconcile::volumes`).

use crate::cli::{BackendArg, Common, Output, ProxyModeArg, VolumesCommand};
use crate::wiring::{controller, source_config, spec_policy, tls_dirs};
use anyhow::{bail, Result};
use berth::api::{self, client::Client};
use berth::daemon;
use berth::plan::display;
use berth::reconcile::tls::TlsSettings;
use berth::reconcile::{self, Controller};
use berth::runtime::docker::DockerRuntime;
use berth::runtime::swarm::SwarmRuntime;
use berth::runtime::ContainerObserver;
use berth::runtime::ContainerRuntime;
use berth::source::{self, Source};
use berth::spec;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `berth apply --once`: one pass (and the pulls it asked for), the plan it applied.
pub(crate) async fn apply<R: ContainerRuntime>(
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
pub(crate) async fn logs(
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

pub(crate) async fn status(
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

/// `berth volumes ls|prune`.
pub(crate) async fn volumes(command: VolumesCommand) -> Result<u8> {
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

pub(crate) fn validate(
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

pub(crate) async fn plan(common: &Common, observed_empty: bool, output: Output) -> Result<u8> {
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

/// What the next pass would do (the store, the engine and nginx are only read).
async fn plan_now<R: ContainerRuntime>(
    ctl: std::sync::Arc<Controller<R>>,
) -> Result<(berth::plan::Plan, Vec<spec::SpecIssue>)> {
    // plan_only never fetches: sync a git source first (a failed sync falls back to the
    // mirror on disk, or reports why there is nothing to plan from).
    ctl.source().snapshot().await?;
    Ok(reconcile::plan_only(&ctl).await?)
}
