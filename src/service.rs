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

/// What the notifier tells systemd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    Ready,
    Watchdog,
}

/// The notifier task: `READY=1` after the first pass, then watchdog pings while passes
/// complete. Runs until aborted; without `$NOTIFY_SOCKET` it only waits.
pub async fn run(last_pass: watch::Receiver<Option<Arc<LastPass>>>, interval: Duration) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return std::future::pending().await;
    }
    notifier(last_pass, interval, watchdog_period, |note| match note {
        Note::Ready => {
            notify_ready();
            tracing::info!("told systemd berth is ready (the first pass finished)");
        }
        Note::Watchdog => send(&[NotifyState::Watchdog]),
    })
    .await
}

/// [`run`] without the environment: `watchdog` is read once the first pass is in (so a
/// test can set it), `note` receives what would be sent.
pub async fn notifier<T: Send + Sync>(
    mut last_pass: watch::Receiver<Option<T>>,
    interval: Duration,
    watchdog: impl FnOnce() -> Option<Duration>,
    mut note: impl FnMut(Note),
) {
    // READY=1 once a pass has been published.
    if last_pass.wait_for(Option::is_some).await.is_err() {
        return std::future::pending().await;
    }
    note(Note::Ready);
    let Some(watchdog) = watchdog() else {
        return std::future::pending().await;
    };
    let limit = stall_limit(interval, watchdog);
    let mut last_seen = Instant::now();
    let mut stalled = false;
    let mut tick = tokio::time::interval(watchdog / 2);
    loop {
        tokio::select! {
            changed = last_pass.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
                last_seen = Instant::now();
                stalled = false;
            }
            _ = tick.tick() => {
                if last_seen.elapsed() <= limit {
                    note(Note::Watchdog);
                } else if !stalled {
                    stalled = true;
                    tracing::warn!(
                        stalled_s = last_seen.elapsed().as_secs(),
                        "no reconcile pass completed lately: watchdog pings stopped, systemd will restart berth"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test(start_paused = true)]
    async fn ready_after_the_first_pass_then_pings_only_while_passes_complete() {
        let (tx, rx) = watch::channel(None::<u32>);
        let notes = Arc::new(Mutex::new(Vec::new()));
        let seen = notes.clone();
        let interval = Duration::from_secs(5);
        let watchdog = Duration::from_secs(20); // limit: max(15 s, 20 s) = 20 s
        let task = tokio::spawn(notifier(
            rx,
            interval,
            move || Some(watchdog),
            move |n| seen.lock().unwrap().push((Instant::now(), n)),
        ));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(
            notes.lock().unwrap().is_empty(),
            "nothing before the first pass"
        );
        let start = Instant::now();
        // Passes every 5 s for a minute: READY=1 once, then a ping every 10 s.
        for pass in 0..12 {
            tx.send_replace(Some(pass));
            tokio::time::sleep(interval).await;
        }
        let during = notes.lock().unwrap().clone();
        assert_eq!(during[0].1, Note::Ready);
        assert_eq!(during.iter().filter(|(_, n)| *n == Note::Ready).count(), 1);
        let pings = during.iter().filter(|(_, n)| *n == Note::Watchdog).count();
        assert!(
            (6..=7).contains(&pings),
            "{pings} pings in 60 s: {during:?}"
        );
        // The loop stalls: pings stop once the last pass is older than the limit.
        let stalled_at = Instant::now();
        tokio::time::sleep(Duration::from_secs(120)).await;
        let after: Vec<_> = notes.lock().unwrap()[during.len()..].to_vec();
        assert!(
            after
                .iter()
                .all(|(at, _)| *at - stalled_at <= Duration::from_secs(20)),
            "pinged while stalled: {after:?}"
        );
        // A pass completes again: pings resume.
        tx.send_replace(Some(99));
        tokio::time::sleep(Duration::from_secs(11)).await;
        let last = *notes.lock().unwrap().last().unwrap();
        assert_eq!(last.1, Note::Watchdog);
        assert!(last.0 - stalled_at > Duration::from_secs(120));
        assert!(start < stalled_at);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn no_watchdog_means_ready_only() {
        let (tx, rx) = watch::channel(None::<u32>);
        let notes = Arc::new(Mutex::new(Vec::new()));
        let seen = notes.clone();
        let task = tokio::spawn(notifier(
            rx,
            Duration::from_secs(1),
            || None,
            move |n| seen.lock().unwrap().push(n),
        ));
        tx.send_replace(Some(1));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(*notes.lock().unwrap(), vec![Note::Ready]);
        task.abort();
    }
}
