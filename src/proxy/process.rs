//! The private nginx process: finding the running master (pid file + /proc), starting or
//! adopting it, retiring the workers a SIGKILLed master left on berth's port, stopping it;
//! and the command lines that address it. Must not touch: the per-app files (files.rs) or
//! reload confirmation (confirm.rs).

use super::{Proxy, ProxyError, ProxyMode};
use rustix::process::{kill_process, Pid, Signal};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

impl Proxy {
    /// Private mode: the pid of the running master, if any.
    pub async fn running_pid(&self) -> Option<u32> {
        let ProxyMode::Private { prefix, .. } = &self.mode else {
            return None;
        };
        let text = tokio::fs::read_to_string(prefix.join("nginx.pid"))
            .await
            .ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        let cmdline = tokio::fs::read(format!("/proc/{pid}/cmdline")).await.ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains("nginx")
            .then_some(pid)
    }

    /// An nginx this process did not start, once per process: berth's files (`_berth.conf`,
    /// the main config) brought up to date, with one test and reload when they changed, and
    /// the members it holds made those the files say.
    async fn bring_running_up_to_date(&self) -> Result<(), ProxyError> {
        let first = !self
            .prepared
            .swap(true, std::sync::atomic::Ordering::SeqCst);
        if !first {
            return Ok(());
        }
        let changed = self.prepare().await?;
        if changed || self.reload_pending().await {
            self.test_config()
                .await
                .map_err(|message| ProxyError::Rejected { message })?;
            self.reload().await?;
        }
        self.resync_or_retry().await;
        Ok(())
    }

    /// Private mode: an app config file (`*.conf`) newer than the last reload's `generation.conf`,
    /// i.e. a berth was killed between writing files and reloading; the files already
    /// match the plan, so nothing else would ever reload them. (A kill between writing
    /// `generation.conf` and signalling nginx is not seen.)
    async fn reload_pending(&self) -> bool {
        let ProxyMode::Private { prefix, .. } = &self.mode else {
            return false;
        };
        let conf_dir = self.conf_dir();
        let generation = prefix.join("generation.conf");
        tokio::task::spawn_blocking(move || {
            let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let Some(reloaded) = modified(&generation) else {
                return false;
            };
            let Ok(entries) = std::fs::read_dir(&conf_dir) else {
                return false;
            };
            entries.flatten().any(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".conf")
                    && entry.file_type().is_ok_and(|t| t.is_file())
                    && modified(&entry.path()).is_some_and(|at| at > reloaded)
            })
        })
        .await
        .unwrap_or(false)
    }

    /// Private mode: starts nginx when it is not running (first start, or it died) and
    /// waits until it answers. Returns true when it had to start it. External mode: writes
    /// berth's http-level file once (reloading the operator's nginx if it changed).
    pub async fn ensure_running(&self) -> Result<bool, ProxyError> {
        let private = match &self.mode {
            ProxyMode::Private { prefix, binary, .. } => Some((prefix, binary)),
            ProxyMode::External { .. } => None,
        };
        // Running and not ours to start: the operator's nginx, or one an earlier berth
        // started (adopted).
        let Some((prefix, binary)) = private else {
            self.bring_running_up_to_date().await?;
            return Ok(false);
        };
        if self.running_pid().await.is_some() {
            self.bring_running_up_to_date().await?;
            return Ok(false);
        }
        self.prepare().await?;
        self.prepared
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = tokio::fs::remove_file(prefix.join("nginx.pid")).await;
        // A master killed with SIGKILL leaves its workers serving the old config on our
        // port; they would keep the new master from binding. Retire them gracefully.
        if let Some(port) = listen_port(self.listen()) {
            let orphans = orphaned_workers_listening_on(port);
            for pid in &orphans {
                quit(*pid);
            }
            for _ in 0..100 {
                if orphans.iter().all(|pid| exited(*pid)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // nginx does not unlink a unix socket a dead master left behind; bind would fail.
        let _ = tokio::fs::remove_file(self.admin_socket()).await;
        if let Err(message) = self.test_config().await {
            return Err(ProxyError::StartFailed { message });
        }
        // nginx daemonizes itself: the master outlives berth, so a berth restart or
        // upgrade never drops traffic; the next berth adopts it through the pid file.
        let output = run_command(&binary.display().to_string(), &private_args(prefix, &[])).await?;
        if !output.status.success() {
            return Err(ProxyError::StartFailed {
                message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        for _ in 0..100 {
            if self.running_pid().await.is_some() {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(ProxyError::StartFailed {
            message: format!(
                "no pid file at {} after 2 s; see {}",
                prefix.join("nginx.pid").display(),
                prefix.join("logs/error.log").display()
            ),
        })
    }

    /// Private mode: stops the supervised nginx (used by tests and `berth serve --stop-proxy`).
    pub async fn stop(&self) -> Result<(), ProxyError> {
        let ProxyMode::Private { prefix, binary, .. } = &self.mode else {
            return Ok(());
        };
        let Some(pid) = self.running_pid().await else {
            return Ok(());
        };
        let _ = Command::new(binary)
            .args(private_args(prefix, &["-s", "quit"]))
            .output()
            .await;
        for _ in 0..200 {
            if exited(pid) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// The port of an nginx `listen` value (`127.0.0.1:8080`, `8080`, `[::1]:8080`).
pub(super) fn listen_port(listen: &str) -> Option<u16> {
    listen
        .rsplit(':')
        .next()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Socket inodes listening on `port` (IPv4 and IPv6), from /proc/net/tcp{,6}.
pub(super) fn listening_inodes(port: u16) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT, st 0A is LISTEN, inode is field 9.
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    inodes
}

/// Runs an nginx command (stdin closed) and returns its output; only a failure to start it
/// is an error here, its exit status is the caller's to judge.
pub(super) async fn run_command(
    program: &str,
    args: &[String],
) -> Result<std::process::Output, ProxyError> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| ProxyError::Spawn {
            command: program.to_string(),
            source,
        })
}

/// Has `pid` exited? Gone from /proc, or a zombie nobody reaped yet: under a PID 1 that does
/// not reap (a container without an init, some sandboxes) a killed master's workers stay
/// zombies forever, and waiting for /proc/<pid> to vanish would always time out. Public so
/// tests and benches that stop an nginx wait the same way.
pub fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// Every nginx worker process on the host with its parent pid.
fn nginx_workers() -> Vec<(u32, Option<u32>)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut workers = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).starts_with("nginx: worker process") {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        workers.push((pid, parent));
    }
    workers
}

/// Does this process hold one of these socket inodes open?
pub(super) fn holds_any_socket(pid: u32, inodes: &[String]) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path())
                    .map(|target| inodes.contains(&target.to_string_lossy().to_string()))
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

fn is_nginx_master(pid: u32) -> bool {
    pid != 1
        && String::from_utf8_lossy(
            &std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
        )
        .starts_with("nginx: master")
}

/// nginx worker processes whose master is gone (parent is init) that still hold a
/// listening socket on `port`: leftovers of a master killed with SIGKILL.
fn orphaned_workers_listening_on(port: u16) -> Vec<u32> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return Vec::new();
    }
    nginx_workers()
        .into_iter()
        .filter(|(_, parent)| !parent.is_some_and(is_nginx_master))
        .filter(|(pid, _)| holds_any_socket(*pid, &inodes))
        .map(|(pid, _)| pid)
        .collect()
}

/// The workers of one master.
pub(super) fn workers_of(master: u32) -> Vec<u32> {
    nginx_workers()
        .into_iter()
        .filter(|(_, parent)| *parent == Some(master))
        .map(|(pid, _)| pid)
        .collect()
}

/// The nginx arguments that address a private prefix (`-p`, `-c`, `-e`) plus `extra`; also
/// what an operator (or a test) needs to drive that nginx by hand.
pub fn private_args(prefix: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "-p".to_string(),
        format!("{}/", prefix.display()),
        "-c".to_string(),
        prefix.join("nginx.conf").display().to_string(),
        "-e".to_string(),
        prefix.join("logs/error.log").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

pub(super) fn split_command(command: &[String]) -> (String, Vec<String>) {
    match command.split_first() {
        Some((program, args)) => (program.clone(), args.to_vec()),
        None => ("true".to_string(), Vec::new()),
    }
}

/// Asks `pid` to quit gracefully (SIGQUIT: nginx finishes in-flight requests first).
fn quit(pid: u32) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, Signal::QUIT);
    }
}

#[cfg(test)]
mod tests {
    use super::exited;

    #[test]
    fn a_running_process_has_not_exited_and_a_zombie_or_missing_one_has() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        assert!(!exited(child.id()), "sleep is running");
        child.kill().expect("kill sleep");
        // Not waited for yet: a zombie until reaped.
        let mut zombie = false;
        for _ in 0..100 {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()));
            if stat.is_ok_and(|s| s.contains(") Z ")) {
                zombie = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(zombie, "the killed child is a zombie until waited for");
        assert!(exited(child.id()), "a zombie counts as exited");
        child.wait().expect("reap sleep");
        assert!(exited(child.id()), "a reaped process has exited");
        assert!(exited(u32::MAX), "no such process");
    }
}
