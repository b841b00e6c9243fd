//! The reconcile loop: runs passes until cancelled, each after the timer or a wake-up (the
//! source's watcher or poll loop, the webhook, the prober, the autoscaler), and right away
//! after a pass that changed something (the confirming pass). Rotates the private nginx's
//! logs before each pass. A pass is never cut short by cancellation: it finishes (nginx
//! files tested and reloaded or restored, containers started or removed) and the loop stops
//! after it; the composition root bounds that wait with `--shutdown-timeout`.
//! Must not touch: any other task (it starts none).

use super::{run_pass, Controller};
use crate::clock::now_ms;
use crate::runtime::ContainerRuntime;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The private nginx's access and error logs are rotated (one old generation kept) when
/// they grow past this; at 500 req/s the access log grows ~100 KB/s.
pub const PROXY_LOG_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Rotates the private nginx's logs past [`PROXY_LOG_MAX_BYTES`] (logged, never fatal).
async fn rotate_proxy_logs<R: ContainerRuntime>(ctl: &Controller<R>) {
    match ctl.proxy.rotate_logs(PROXY_LOG_MAX_BYTES).await {
        Ok(rotated) if !rotated.is_empty() => {
            info!(files = ?rotated, "rotated the private nginx's logs")
        }
        Ok(_) => {}
        Err(e) => warn!("cannot rotate the private nginx's logs: {e}"),
    }
}

/// Runs passes until `cancel` fires; an in-flight pass finishes first. Containers and the
/// private nginx keep running afterwards.
pub async fn run_loop<R: ContainerRuntime>(ctl: Arc<Controller<R>>, cancel: CancellationToken) {
    let mut trigger = "start".to_string();
    // Passes in a row that failed on the store (PostgreSQL gone): retried with a doubling
    // wait from 0.5 s up to the interval, so a short outage resumes quickly.
    let mut store_down = 0u32;
    while !cancel.is_cancelled() {
        rotate_proxy_logs(&ctl).await;
        let mut wait = ctl.settings.interval;
        let result = run_pass(&ctl, &trigger).await;
        match &result {
            Err(super::ReconcileError::Store(_)) => store_down += 1,
            Ok(_) if store_down > 0 => {
                info!(failed_passes = store_down, "store up again: passes resume");
                store_down = 0;
            }
            _ => {}
        }
        match result {
            // Something changed: observe again right away to confirm (and record synced).
            // Only successful work re-triggers, so failures cannot spin.
            Ok(report) if report.steps_applied > 0 => {
                trigger = "confirm".to_string();
                continue;
            }
            // A backoff ends before the timer: run then (kube-runtime's requeue).
            Ok(report) => {
                if let Some(at) = report.requeue_at {
                    let until = Duration::from_millis((at - now_ms()).max(1) as u64);
                    wait = wait.min(until);
                }
            }
            Err(e @ super::ReconcileError::Store(_)) => {
                let backoff = Duration::from_millis(500 << (store_down - 1).min(8));
                wait = wait.min(backoff);
                warn!(
                    retry_in_ms = wait.as_millis() as u64,
                    "store down: containers and nginx keep running as they are: {e}"
                );
            }
            Err(e) => warn!("reconcile pass failed: {e}"),
        }
        let requeued = wait < ctl.settings.interval;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {
                trigger = if requeued { "requeue" } else { "timer" }.to_string();
            }
            _ = ctl.wake.notify.notified() => {
                trigger = ctl.wake.take_reason().unwrap_or("wake").to_string();
            }
            _ = cancel.cancelled() => break,
        }
    }
    info!("reconcile loop stopped; containers and nginx keep running");
}
