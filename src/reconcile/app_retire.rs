//! The retiring half of one app's run (`AppRun`): draining, stopping and removing
//! containers (with the caller's choice of what happens to anonymous volumes), the
//! `recreate` strategy (stop old, then start new), failed rollouts and self-heal repairs
//! bookkeeping, and the `volume-kept` event of a removed app. Must not touch: other apps.

use super::app_run::{AppRun, Stop};
use super::now_ms;
use super::StepError;
use crate::plan::{heal, DesiredApp};
use crate::runtime::{ContainerRuntime, ContainerState, ObservedContainer, RemoveVolumes};
use crate::store::EventType;
use futures_util::future::join_all;
use std::time::Duration;
use tracing::warn;

impl<'a, R: ContainerRuntime> AppRun<'a, R> {
    /// Seconds a container of this app gets between its stop signal and SIGKILL.
    pub(super) fn grace_seconds(&self) -> u32 {
        self.desired
            .and_then(|d| d.spec.termination.grace_period_seconds)
            .unwrap_or(self.ctl.settings.stop_timeout_seconds)
    }

    /// Takes `ids` out of the upstream, waits `drain` when any of them was routed, then
    /// stops them and, unless `stop_only`, removes them (`volumes` says what happens to
    /// their anonymous volumes).
    pub(super) async fn retire(
        &mut self,
        ids: &[&str],
        drain_seconds: u32,
        volumes: RemoveVolumes,
        stop_only: bool,
    ) -> Result<(), StepError> {
        // A removed app's route leaves nginx in the proxy batch, before its containers stop.
        self.proxy_batch_done().await;
        let addresses: Vec<String> = ids
            .iter()
            .filter_map(|id| self.observed_container(id)?.address())
            .collect();
        let routed = addresses.iter().any(|a| {
            self.members.contains(a) || self.routed_in_pass.contains(a) || self.was_routed(a)
        });
        let before = self.members.len();
        self.members.retain(|m| !addresses.contains(m));
        if self.members.len() != before {
            self.sync_proxy().await?;
        }
        if routed && drain_seconds > 0 {
            tokio::time::sleep(Duration::from_secs(u64::from(drain_seconds))).await;
        }
        // After the drain: a leader whose lease lapsed meanwhile leaves them to the next one.
        self.ctl.may_mutate()?;
        let runtime = &self.ctl.runtime;
        let timeout = self.grace_seconds();
        let observed = self.observed;
        let results = join_all(ids.iter().map(|id| async move {
            let running = observed
                .containers
                .iter()
                .any(|c| c.id == *id && c.state == ContainerState::Running);
            if running || stop_only {
                runtime.stop(id, timeout).await?;
            }
            if stop_only {
                return Ok(Vec::new());
            }
            runtime.remove(id, volumes).await
        }))
        .await;
        let mut kept = Vec::new();
        let mut failure = None;
        for result in results {
            match result {
                Ok(volumes) => kept.extend(volumes),
                Err(error) => failure = Some(StepError::from(error)),
            }
        }
        self.remember_kept_volumes(kept).await;
        failure.map_or(Ok(()), Err)
    }

    /// Records anonymous volumes a removal left on the host, so the app's removal finds
    /// them (Docker gives them no labels).
    pub(super) async fn remember_kept_volumes(&self, volumes: Vec<String>) {
        if volumes.is_empty() {
            return;
        }
        if let Err(e) = self
            .ctl
            .store
            .record_kept_volumes(self.app, &volumes, now_ms())
            .await
        {
            warn!(
                app = self.app,
                "cannot record the kept anonymous volumes {}: {e}",
                volumes.join(", ")
            );
        }
    }

    /// After the app's removal: the anonymous volumes its earlier removals left on the host
    /// (scale-in, failed starts) go too, as the ones of its last containers did. One still
    /// in use stays recorded for the next try.
    pub(super) async fn remove_kept_volumes(&self) {
        let recorded = match self.ctl.store.kept_volumes(self.app).await {
            Ok(v) => v,
            Err(e) => {
                warn!(
                    app = self.app,
                    "cannot list the kept anonymous volumes: {e}"
                );
                return;
            }
        };
        let mut gone = Vec::new();
        for volume in recorded {
            match self.ctl.runtime.remove_anonymous_volume(&volume).await {
                Ok(()) => gone.push(volume),
                Err(e) => warn!(app = self.app, "anonymous volume {volume} kept: {e}"),
            }
        }
        if let Err(e) = self.ctl.store.forget_kept_volumes(&gone).await {
            warn!(
                app = self.app,
                "cannot forget removed anonymous volumes: {e}"
            );
        }
    }

    /// `strategy: recreate`: the old replica leaves the upstream, drains and stops first;
    /// then the new one is created (with the old one's anonymous volumes), started and
    /// waited for; only then is the old one removed (volumes kept). When the new one never
    /// comes up, the old one is started again so the app is not left down.
    pub(super) async fn recreate(
        &mut self,
        desired: &DesiredApp,
        old_id: &str,
        drain_seconds: u32,
    ) -> Result<ObservedContainer, Stop> {
        self.retire(&[old_id], drain_seconds, RemoveVolumes::Keep, true)
            .await
            .map_err(Stop::Failed)?;
        let runtime = &self.ctl.runtime;
        match self.bring_up(desired, Some(old_id)).await {
            Ok(new) => {
                let kept = runtime
                    .remove(old_id, RemoveVolumes::Keep)
                    .await
                    .map_err(|e| Stop::Failed(e.into()))?;
                self.remember_kept_volumes(kept).await;
                if let Some(address) = new.address() {
                    self.members.push(address);
                }
                self.sync_proxy().await.map_err(Stop::Failed)?;
                Ok(new)
            }
            Err(e) => {
                // The app is not left down: the old replica serves again until the new spec
                // can run (a pull, a fixed spec).
                if let Err(restart) = runtime.start(old_id).await {
                    warn!(
                        app = self.app,
                        "cannot restart the old container after a failed recreate: {restart}"
                    );
                }
                Err(e)
            }
        }
    }

    /// Remembers that spec `hash` never became healthy (not retried until the spec
    /// changes) and reports it.
    pub(super) async fn record_failed_rollout(&mut self, hash: &str, reason: &str, text: String) {
        self.report.failed_rollouts.insert(self.app.to_string());
        if let Err(e) = self
            .ctl
            .store
            .mark_rollout_failed(self.app, hash, self.revision, reason, now_ms())
            .await
        {
            warn!(app = self.app, "cannot record failed rollout: {e}");
        }
        self.ctl
            .event(
                Some(self.app),
                EventType::RolloutFailed,
                text,
                self.revision,
                serde_json::json!({ "spec_hash": hash }),
            )
            .await;
    }

    /// Counts one self-heal repair of `broken` (the replaced container; None: the app's
    /// stopped one) in memory and in the store; reports the app when it just became
    /// crash-looping (self-heal quarantined until the spec changes).
    pub(super) async fn record_repair(&self, hash: &str, broken: Option<&str>) {
        let failure = self.failure_of(broken);
        let now = now_ms();
        let next = {
            let mut heal = self.ctl.heal.lock().expect("heal lock");
            let mut next = heal::after_repair(heal.get(self.app), hash, now);
            next.last_failure = failure;
            heal.insert(self.app.to_string(), next.clone());
            next
        };
        super::heal_state::save(self.ctl, self.app, &next, now).await;
        if let Some(reason) = heal::crash_loop_reason(Some(&next), hash) {
            self.ctl
                .event(
                    Some(self.app),
                    EventType::CrashLooping,
                    reason,
                    self.revision,
                    serde_json::json!({ "spec_hash": hash, "repairs": next.repairs }),
                )
                .await;
        }
    }

    /// What the broken container `id` did, as this pass observed it (None: the app's first
    /// container that is not running): it exited, docker was restarting it, or its probe
    /// failed (with the prober's last error).
    pub(super) fn failure_of(&self, id: Option<&str>) -> Option<String> {
        let container = match id {
            Some(id) => self.observed_container(id)?,
            None => self.observed.containers.iter().find(|c| {
                c.app == self.app
                    && !matches!(
                        c.state,
                        ContainerState::Running
                            | ContainerState::Restarting
                            | ContainerState::Paused
                    )
            })?,
        };
        let name = &container.name;
        Some(match container.state {
            ContainerState::Running => {
                let probes = self.ctl.probes.lock().expect("probe lock");
                let error = probes
                    .record_of(&container.id)
                    .and_then(|r| r.last_error.clone());
                format!(
                    "container {name} failed its health check: {}",
                    error.as_deref().unwrap_or("probe failed")
                )
            }
            ContainerState::Restarting => {
                format!("container {name} kept exiting (docker was restarting it)")
            }
            other => format!(
                "container {name} was {}",
                format!("{other:?}").to_lowercase()
            ),
        })
    }

    /// After the app's removal: one `volume-kept` event naming its named volumes, which
    /// stay until `berth volumes prune APP`.
    pub(super) async fn report_kept_volumes(&self) {
        let volumes = match self.ctl.runtime.volumes(Some(self.app)).await {
            Ok(v) => v,
            Err(e) => {
                warn!(app = self.app, "cannot list the removed app's volumes: {e}");
                return;
            }
        };
        if volumes.is_empty() {
            return;
        }
        let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
        self.ctl
            .event(
                Some(self.app),
                EventType::VolumeKept,
                format!(
                    "app removed; its volumes are kept: {} (delete them with `berth volumes prune {}`)",
                    names.join(", "),
                    self.app
                ),
                self.revision,
                serde_json::json!({ "volumes": names }),
            )
            .await;
    }
}
