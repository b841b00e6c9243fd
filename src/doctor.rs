//! `berth doctor`: is this host ready for `berth serve` with these flags and config file?
//! One line per check, each failing one saying what to fix; exit 0 when nothing failed, 1
//! otherwise; `-o json`. Checks only read: the store is opened read-only, ports are bound
//! and released at once, a git source is fetched into a temporary mirror (never the one in
//! the state dir), the state dir is probed with a temporary file.
//! Must not touch: containers, networks, nginx's files or process, the store's rows.

use crate::cli::{Common, Output, ProxyModeArg, ServeArgs};
use anyhow::Result;
use berth::proxy::Proxy;
use berth::runtime::docker::DockerRuntime;
use berth::source::{Source, SourceConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one network-bound check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// Most clock difference to the engine's host accepted.
const MAX_CLOCK_SKEW_S: f64 = 5.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Ok,
    /// Worth knowing, but berth serves without it.
    Warn,
    Fail,
}

#[derive(Debug, serde::Serialize)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) status: Status,
    /// What was found, and for a warning or failure what to do.
    pub(crate) detail: String,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Ok,
        detail: detail.into(),
    }
}
fn warn(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Warn,
        detail: detail.into(),
    }
}
fn fail(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Fail,
        detail: detail.into(),
    }
}

pub(crate) async fn run(args: &ServeArgs, output: Output) -> Result<u8> {
    let checks = checks(args).await;
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "ok": !failed, "checks": checks }))?
        ),
        Output::Text => {
            for c in &checks {
                let status = match c.status {
                    Status::Ok => "ok  ",
                    Status::Warn => "warn",
                    Status::Fail => "FAIL",
                };
                println!(
                    "{status}  {:<12} {}",
                    c.name,
                    berth::redact::redact_text(&c.detail)
                );
            }
            let fails = checks.iter().filter(|c| c.status == Status::Fail).count();
            if failed {
                println!("{fails} checks failed: fix them, then run `berth doctor` again");
            } else {
                println!("ready: berth serve can run on this host");
            }
        }
    }
    Ok(u8::from(failed))
}

async fn checks(args: &ServeArgs) -> Vec<Check> {
    let common = &args.common;
    let mut out = Vec::new();
    let engine = docker(common.instance.clone()).await;
    let (docker_check, runtime, engine_time) = engine;
    out.push(docker_check);
    out.push(match &runtime {
        Some(rt) => match rt.network_exists(&common.network).await {
            Ok(true) => ok(
                "network",
                format!("docker network {:?} exists", common.network),
            ),
            Ok(false) => ok(
                "network",
                format!(
                    "docker network {:?} does not exist yet: berth creates it at its first pass",
                    common.network
                ),
            ),
            Err(e) => fail("network", e.to_string()),
        },
        None => fail("network", "not checked: the docker engine is unreachable"),
    });
    if common.backend == crate::cli::BackendArg::Swarm {
        out.push(swarm(common.instance.clone()).await);
    }
    if common.nginx_conf_dir.is_none() {
        out.push(nginx(&common.nginx_binary).await);
    } else {
        out.push(ok("nginx", "production mode (--nginx-conf-dir): berth runs the test and reload commands of your nginx"));
    }
    out.push(lua_module(common).await);
    out.extend(ports(args).await);
    out.push(state_dir(&common.state_dir));
    out.push(store(common.store.as_deref(), &common.state_dir).await);
    out.push(source(args).await);
    out.push(registry_credentials(common.docker_config.as_deref()));
    out.push(clock(engine_time));
    out
}

/// `--backend swarm`: the engine must be a swarm manager (only managers take service
/// calls).
async fn swarm(instance: Option<String>) -> Check {
    use berth::runtime::swarm::{ServiceObserver, SwarmRuntime};
    match tokio::time::timeout(CHECK_TIMEOUT, SwarmRuntime::connect(instance)).await {
        Ok(Ok(rt)) => ok(
            "swarm",
            format!("this engine is a swarm manager (node {})", rt.local_node()),
        ),
        Ok(Err(e)) => fail("swarm", e.to_string()),
        Err(_) => fail("swarm", "no answer from the docker engine"),
    }
}

/// Docker reachable and its version; hands back the runtime and the engine's clock.
async fn docker(instance: Option<String>) -> (Check, Option<DockerRuntime>, Option<String>) {
    let connect = tokio::time::timeout(CHECK_TIMEOUT, DockerRuntime::connect(instance)).await;
    let runtime =
        match connect {
            Ok(Ok(rt)) => rt,
            Ok(Err(e)) => {
                return (
                    fail(
                        "docker",
                        format!(
                    "{e}; the user berth runs as needs the docker group (usermod -aG docker USER)"
                ),
                    ),
                    None,
                    None,
                )
            }
            Err(_) => return (
                fail(
                    "docker",
                    "the docker engine did not answer within 30 s: check `systemctl status docker`",
                ),
                None,
                None,
            ),
        };
    match runtime.engine_facts().await {
        Ok(facts) => (
            ok(
                "docker",
                format!(
                    "engine {} (API {}) at {}",
                    facts.version,
                    facts.api_version,
                    runtime.endpoint()
                ),
            ),
            Some(runtime),
            facts.system_time,
        ),
        Err(e) => (fail("docker", e.to_string()), Some(runtime), None),
    }
}

/// The nginx binary and its version (`nginx -v` writes it on stderr).
async fn nginx(binary: &Path) -> Check {
    let run = tokio::process::Command::new(binary)
        .arg("-v")
        .output()
        .await;
    match run {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stderr);
            let version = text
                .trim()
                .trim_start_matches("nginx version: ")
                .to_string();
            ok("nginx", format!("{} ({version})", binary.display()))
        }
        Ok(out) => fail(
            "nginx",
            format!(
                "{} -v failed: {}; install nginx (apt install nginx) or pass --nginx-binary PATH",
                binary.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ),
        Err(e) => fail(
            "nginx",
            format!(
                "cannot run {}: {e}; install nginx (apt install nginx) or pass --nginx-binary PATH",
                binary.display()
            ),
        ),
    }
}

/// The Lua module (libnginx-mod-http-lua + lua-resty-core) for dynamic upstreams, checked
/// the way `serve` checks it (`nginx -t` of a config that loads it): needed with
/// `--proxy-mode dynamic`, otherwise berth falls back to reloads.
async fn lua_module(common: &Common) -> Check {
    if common.nginx_conf_dir.is_some() {
        return ok(
            "lua-module",
            "production mode: your nginx loads the Lua module itself (README)",
        );
    }
    let wanted = common.proxy_mode;
    if wanted == Some(ProxyModeArg::Reload) {
        return ok("lua-module", "not needed: --proxy-mode reload");
    }
    match berth::proxy::lua_modules(&common.nginx_binary).await {
        Ok(modules) if modules.is_empty() => ok("lua-module", "built into nginx: dynamic upstreams"),
        Ok(modules) => ok(
            "lua-module",
            format!("nginx loads {}: dynamic upstreams", modules.iter().map(|m| m.display().to_string()).collect::<Vec<_>>().join(", ")),
        ),
        Err(e) if wanted == Some(ProxyModeArg::Dynamic) => fail("lua-module", format!("--proxy-mode dynamic: {e}")),
        Err(e) => warn(
            "lua-module",
            format!("{e}; berth works without it (proxy mode reload: each upstream change reloads nginx)"),
        ),
    }
}

/// The addresses serve binds: nginx's --listen, --api-listen, --webhook-listen.
async fn ports(args: &ServeArgs) -> Vec<Check> {
    let common = &args.common;
    let mut wanted: Vec<(&str, &str)> = Vec::new();
    if common.nginx_conf_dir.is_none() {
        wanted.push(("--listen", common.listen.as_str()));
    }
    if args.api.api_listen != "off" {
        wanted.push(("--api-listen", args.api.api_listen.as_str()));
    }
    if let Some(addr) = &args.webhook_listen {
        wanted.push(("--webhook-listen", addr.as_str()));
    }
    let nginx_pid = Proxy::private(
        common.state_dir.join("nginx"),
        common.listen.clone(),
        common.nginx_binary.clone(),
    )
    .running_pid()
    .await;
    let mut out = Vec::new();
    for (flag, addr) in wanted {
        let check = match std::net::TcpListener::bind(addr) {
            Ok(listener) => {
                drop(listener);
                ok("port", format!("{addr} ({flag}) is free"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => match (flag, nginx_pid) {
                ("--listen", Some(pid)) => ok(
                    "port",
                    format!("{addr} ({flag}) is served by berth's private nginx (pid {pid}), which berth adopts"),
                ),
                ("--api-listen", _) if berth_api_answers(addr).await => ok(
                    "port",
                    format!("{addr} ({flag}) is served by a running berth serve (its /healthz answers)"),
                ),
                _ => fail(
                    "port",
                    format!("{addr} ({flag}) is in use: stop what listens there (ss -ltnp) or choose another address with {flag}"),
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => fail(
                "port",
                format!("{addr} ({flag}): {e}; ports below 1024 need CAP_NET_BIND_SERVICE (the systemd unit grants it) or use a port from 1024"),
            ),
            Err(e) => fail("port", format!("{addr} ({flag}): {e}; pass a HOST:PORT address with {flag}")),
        };
        out.push(check);
    }
    out
}

/// Does a berth status API answer on `addr` (a running `berth serve`)?
async fn berth_api_answers(addr: &str) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return false;
    };
    match client.get(format!("http://{addr}/healthz")).send().await {
        Ok(answer) => answer.status().is_success(),
        Err(_) => false,
    }
}

/// The state dir (or the directory it will be created in) is writable.
fn state_dir(dir: &Path) -> Check {
    let mut existing: PathBuf = dir.to_path_buf();
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p.to_path_buf(),
            _ => {
                existing = PathBuf::from(".");
                break;
            }
        }
    }
    let probe = tempfile::Builder::new()
        .prefix(".berth-doctor")
        .tempfile_in(&existing);
    match probe {
        Ok(_) if existing == dir => ok("state-dir", format!("{} is writable", dir.display())),
        Ok(_) => ok(
            "state-dir",
            format!("{} does not exist yet; berth creates it ({} is writable)", dir.display(), existing.display()),
        ),
        Err(e) => fail(
            "state-dir",
            format!(
                "{} is not writable ({e}): give it to the user berth runs as (chown -R berth: {}) or pass --state-dir",
                existing.display(),
                existing.display()
            ),
        ),
    }
}

/// The store opens and answers: a SQLite file read-only, a PostgreSQL server with one
/// connection (nothing is written or migrated).
async fn store(url: Option<&str>, state_dir: &Path) -> Check {
    use berth::store::{Store, StoreUrl};
    let url = match url {
        Some(text) => match StoreUrl::parse(text) {
            Ok(url) => url,
            Err(e) => return fail("store", e.to_string()),
        },
        None => StoreUrl::default_in(state_dir),
    };
    if let StoreUrl::Sqlite(db) = &url {
        if !db.exists() {
            return ok(
                "store",
                format!(
                    "{} does not exist yet; berth creates it at start",
                    db.display()
                ),
            );
        }
    }
    let probe = tokio::time::timeout(CHECK_TIMEOUT, Store::probe_url(&url)).await;
    match probe {
        Ok(Ok(n)) => ok(
            "store",
            format!("{} {} answers ({n} migrations applied)", url.dialect(), url.display()),
        ),
        Ok(Err(e)) => fail(
            "store",
            match url {
                StoreUrl::Sqlite(_) => format!("{e}: check the file's owner and permissions, or move it away to start with an empty store"),
                StoreUrl::Postgres(_) => format!("{e}; a new database is migrated by berth serve at its first start"),
            },
        ),
        Err(_) => fail(
            "store",
            format!("{} did not answer within {}s", url.display(), CHECK_TIMEOUT.as_secs()),
        ),
    }
}

/// The spec source: a directory's specs are valid; a git remote answers with the branch,
/// fetched into a temporary mirror with the configured credentials.
async fn source(args: &ServeArgs) -> Check {
    let common = &args.common;
    let Some(url) = &common.git else {
        let dir = common
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("examples/apps"));
        return match berth::source::dir::read_snapshot(&dir) {
            Ok(snapshot) => {
                let loaded = berth::spec::load_source(&snapshot.files, &snapshot.unreadable);
                let problems = loaded.issues.len();
                if problems == 0 {
                    ok(
                        "source",
                        format!(
                            "dir {}: {} apps in {} files, all valid",
                            dir.display(),
                            loaded.apps.len(),
                            snapshot.files.len()
                        ),
                    )
                } else {
                    warn("source", format!("dir {}: {problems} problems (berth validate {} lists them; those apps are quarantined)", dir.display(), dir.display()))
                }
            }
            Err(e) => fail("source", format!("{e}; pass --dir PATH or --git URL")),
        };
    };
    let mirror = match tempfile::Builder::new()
        .prefix("berth-doctor-git")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => return fail("source", format!("cannot create a temporary mirror: {e}")),
    };
    let config = match crate::wiring::git_config(common, url, mirror.path()) {
        Ok(c) => c,
        Err(e) => return fail("source", format!("{e:#}")),
    };
    let describe = config.describe();
    let source = Source::new(SourceConfig::Git(config));
    match tokio::time::timeout(CHECK_TIMEOUT, source.snapshot()).await {
        Ok(Ok(snapshot)) => ok(
            "source",
            format!(
                "{describe}: reachable, credentials accepted, commit {} ({} spec files)",
                snapshot.revision.chars().take(12).collect::<String>(),
                snapshot.files.len()
            ),
        ),
        Ok(Err(e)) => fail("source", e.to_string()),
        Err(_) => fail(
            "source",
            format!("{describe}: no answer within 30 s: check the URL and the network"),
        ),
    }
}

/// Registry credentials in the docker CLI's config (`--docker-config`, else $DOCKER_CONFIG
/// or ~/.docker), read the way berth's pulls read it.
fn registry_credentials(docker_config: Option<&Path>) -> Check {
    use berth::runtime::credentials;
    let dir = docker_config
        .map(Path::to_path_buf)
        .unwrap_or_else(credentials::default_config_dir);
    let file = dir.join("config.json");
    let Ok(text) = std::fs::read_to_string(&file) else {
        return warn(
            "registry",
            format!(
                "no {}: images are pulled anonymously (`docker login` as berth's user, or \
                 --docker-config DIR, adds credentials)",
                file.display()
            ),
        );
    };
    match credentials::parse_config(&text) {
        Ok(config) => {
            let auths = config.auths.len();
            let helpers = config.cred_helpers.len();
            match (&config.creds_store, auths + helpers) {
                (None, 0) => warn(
                    "registry",
                    format!(
                        "{} holds no registry credentials (`docker login` adds them)",
                        file.display()
                    ),
                ),
                (store, _) => ok(
                    "registry",
                    format!(
                        "{}: {auths} registries{}{}",
                        file.display(),
                        if helpers > 0 {
                            format!(", {helpers} credential helpers")
                        } else {
                            String::new()
                        },
                        store
                            .as_ref()
                            .map(|s| format!(", store {s}"))
                            .unwrap_or_default()
                    ),
                ),
            }
        }
        Err(e) => fail(
            "registry",
            format!("{} is not valid ({e}): fix or remove it", file.display()),
        ),
    }
}

/// berth's clock against the engine host's (probes, backoffs and history use wall time).
fn clock(engine_time: Option<String>) -> Check {
    let now = jiff::Timestamp::now();
    if now.as_second() < 1_704_067_200 {
        return fail(
            "clock",
            format!("the clock says {now}, before 2024: set the time (timedatectl set-ntp true)"),
        );
    }
    let Some(text) = engine_time else {
        return warn(
            "clock",
            format!("{now}; not compared with the engine's clock (engine unreachable)"),
        );
    };
    match text.parse::<jiff::Timestamp>() {
        Ok(engine) => {
            let skew = (now.as_millisecond() - engine.as_millisecond()).abs() as f64 / 1000.0;
            if skew <= MAX_CLOCK_SKEW_S {
                ok(
                    "clock",
                    format!("{now}, {skew:.1} s from the engine's clock"),
                )
            } else {
                fail("clock", format!("{skew:.1} s off the engine's clock ({engine}): enable NTP (timedatectl set-ntp true)"))
            }
        }
        Err(e) => warn(
            "clock",
            format!("{now}; the engine's time {text:?} does not parse ({e})"),
        ),
    }
}
