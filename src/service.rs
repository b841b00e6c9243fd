//! The systemd service protocol over `$NOTIFY_SOCKET` (sd-notify): `READY=1` once the first
//! reconcile pass has finished, `WATCHDOG=1` every half `$WATCHDOG_USEC` while passes keep
//! completing, `RELOADING=1` / `STOPPING=1` when a signal arrives. Without `$NOTIFY_SOCKET`
//! (not run by systemd) every call does nothing. The environment is left set: a SIGHUP
//! reload re-executes berth, which must find it again.
//! Must not touch: the loop or anything it owns (it only watches the published last pass).

use crate::last_pass::LastPass;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

fn send(state: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!("cannot notify systemd ($NOTIFY_SOCKET): {e}");
    }
}

/// `READY=1`: serving (also after a refused reload, which systemd waits on).
pub fn notify_ready() {
    send(&[NotifyState::Ready]);
}

/// `RELOADING=1`: a SIGHUP restarts berth with the new config; the next `READY=1` ends it.
pub fn notify_reloading() {
    send(&[NotifyState::Reloading]);
}

/// `STOPPING=1`: the pass in flight finishes, then berth exits.
pub fn notify_stopping() {
    send(&[NotifyState::Stopping]);
}

/// `$WATCHDOG_USEC` when it is meant for this process: libsystemd's rule (a
/// `$WATCHDOG_PID` naming another process disables it; no `$WATCHDOG_PID` does not).
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// How long passes may stop completing before the watchdog pings stop: systemd then
/// restarts berth (`WatchdogSec=` in the unit must be larger than the longest pass).
pub fn stall_limit(interval: Duration, watchdog: Duration) -> Duration {
    (interval * 3).max(watchdog)
}

/// The notifier task: `READY=1` after the first pass, then watchdog pings while passes
/// complete. Runs until aborted; without `$NOTIFY_SOCKET` it only waits.
pub async fn run(mut last_pass: watch::Receiver<Option<Arc<LastPass>>>, interval: Duration) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return std::future::pending().await;
    }
    // READY=1 once a pass has been published.
    if last_pass.wait_for(Option::is_some).await.is_err() {
        return std::future::pending().await;
    }
    notify_ready();
    tracing::info!("told systemd berth is ready (the first pass finished)");
    let Some(watchdog) = watchdog_period() else {
        return std::future::pending().await;
    };
    let limit = stall_limit(interval, watchdog);
    let mut last_seen = Instant::now();
    let mut tick = tokio::time::interval(watchdog / 2);
    loop {
        tokio::select! {
            changed = last_pass.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
                last_seen = Instant::now();
            }
            _ = tick.tick() => {
                if last_seen.elapsed() <= limit {
                    send(&[NotifyState::Watchdog]);
                } else {
                    tracing::warn!(
                        stalled_s = last_seen.elapsed().as_secs(),
                        "no reconcile pass completed lately: watchdog pings stopped, systemd will restart berth"
                    );
                }
            }
        }
    }
}
