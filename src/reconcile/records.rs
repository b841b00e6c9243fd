//! What a pass records in the store: per-app statuses with the desired and last good
//! spec (one atomic write per changed app), the revision's outcome, and forgetting apps
//! that left the source. Writes only when something changed since the last write.
//! Must not touch: Docker or nginx.

use super::apply::ApplyReport;
use super::desired::DesiredState;
use super::{Controller, WrittenStatus};
use crate::clock::now_ms;
use crate::plan::prune::PruneVerdict;
use crate::plan::{Desired, Overrides, Plan};
use crate::runtime::ContainerRuntime;
use crate::source::SourceConfig;
use crate::store::{AppStatus, EventType, NewRevision, RevisionSource, RevisionStatus};
use tracing::warn;

/// Forgets apps that left the source once they are gone from the host, so a later spec of
/// the same name never revives their old last good spec.
pub(super) async fn forget_removed<R: ContainerRuntime>(
    ctl: &Controller<R>,
    state: &DesiredState,
    verdict: &PruneVerdict,
    report: &ApplyReport,
) {
    if verdict.is_refused() || state.desired.prune_blocked.is_some() {
        return;
    }
    // The cached view of the store's apps: a steady pass reads no rows.
    let known = match super::read::cached_known_apps(ctl).await {
        Ok(known) => known,
        Err(e) => {
            warn!("cannot list apps: {e}");
            return;
        }
    };
    for (name, row) in known.iter() {
        if state.desired.apps.contains_key(name)
            || state.desired.held.contains_key(name)
            || report.errors.contains_key(name)
        {
            continue;
        }
        *ctl.known.lock().expect("known lock") = None;
        match ctl.store.delete_app(name).await {
            Ok(_) => {
                ctl.written_status.lock().expect("status lock").remove(name);
                ctl.app_files
                    .lock()
                    .expect("app files lock")
                    .insert(name.clone(), row.source_file.clone());
                ctl.event(
                    Some(name),
                    EventType::Removed,
                    format!(
                        "app removed: its spec left the source ({})",
                        row.source_file
                    ),
                    &state.desired.revision,
                    serde_json::Value::Null,
                )
                .await;
            }
            Err(e) => warn!(app = %name, "cannot forget removed app: {e}"),
        }
    }
}

/// Records the outcome of this revision in the store (only when it changed).
pub(super) async fn record_revision<R: ContainerRuntime>(
    ctl: &Controller<R>,
    state: &DesiredState,
    verdict: &PruneVerdict,
    report: &ApplyReport,
) {
    let revision = &state.desired.revision;
    let mut notes = Vec::new();
    if !state.quarantined.is_empty() {
        let apps: Vec<&str> = state.quarantined.keys().map(String::as_str).collect();
        notes.push(format!("quarantined: {}", apps.join(", ")));
    }
    if let PruneVerdict::Refused { apps, .. } = verdict {
        notes.push(format!("prune refused for {}", apps.join(", ")));
    }
    if !report.errors.is_empty() {
        let apps: Vec<&str> = report.errors.keys().map(String::as_str).collect();
        notes.push(format!("failed: {}", apps.join(", ")));
    }
    let status = if report.steps_failed > 0 && report.steps_applied == 0 {
        RevisionStatus::Failed
    } else if notes.is_empty() {
        RevisionStatus::Applied
    } else {
        RevisionStatus::Partial
    };
    let mut message = format!("{} apps", state.desired.apps.len());
    for note in notes {
        message.push_str("; ");
        message.push_str(&note);
    }
    let key = (revision.clone(), status, message.clone());
    if ctl
        .recorded_revision
        .lock()
        .expect("revision lock")
        .as_ref()
        == Some(&key)
    {
        return;
    }
    let source = match ctl.settings.source {
        SourceConfig::Dir(_) => RevisionSource::Dir,
        SourceConfig::Git(_) => RevisionSource::Git,
    };
    let record = NewRevision {
        revision: revision.clone(),
        source,
        status,
        message,
        at: now_ms(),
    };
    match ctl.store.record_revision(&record).await {
        Ok(()) => *ctl.recorded_revision.lock().expect("revision lock") = Some(key),
        Err(e) => warn!("cannot record revision: {e}"),
    }
}

pub(super) async fn record_statuses<R: ContainerRuntime>(
    ctl: &Controller<R>,
    state: &DesiredState,
    plan: &Plan,
    overrides: &Overrides,
    report: &ApplyReport,
) {
    let now = now_ms();
    let desired: &Desired = &state.desired;
    for (name, app) in &desired.apps {
        if state.quarantined.contains_key(name) {
            // Runs its last good spec: status says why; desired and last-good rows stay.
            continue;
        }
        // A failing app held by its retry backoff keeps saying why.
        let mut error = report
            .errors
            .get(name)
            .map(ToString::to_string)
            .or_else(|| {
                let retry = ctl.retry.lock().expect("retry lock");
                retry
                    .get(name)
                    .filter(|r| r.hash == app.hash)
                    .map(|r| r.error.clone())
            });
        let status = if overrides.failed_rollouts.get(name) == Some(&app.hash)
            || report.failed_rollouts.contains(name)
        {
            AppStatus::FailedRollout
        } else if error.is_some() {
            AppStatus::Degraded
        } else if plan.steps_for(name).any(|s| s.touches_containers()) {
            // Its steps succeeded; the follow-up pass (woken right away) observes the
            // result and says synced.
            AppStatus::Progressing
        } else if plan.apps[name].ready_replicas >= plan.apps[name].desired_replicas {
            AppStatus::Synced
        } else if ctl.images.pulling(&app.spec.image) {
            // Waiting for its image: the worker wakes the loop when the pull ends.
            AppStatus::Progressing
        } else if plan
            .steps_for(name)
            .any(|s| matches!(s, crate::plan::Step::NoOp { .. }))
        {
            // Held back (self-heal backoff, quarantine): it will not fix itself.
            let heal = ctl.heal.lock().expect("heal lock");
            match crate::plan::heal::crash_loop_reason(heal.get(name), &app.hash) {
                Some(why) => {
                    error = Some(why);
                    AppStatus::CrashLooping
                }
                None => AppStatus::Degraded,
            }
        } else {
            // Containers still starting (not yet past their probes).
            AppStatus::Progressing
        };
        // The whole spec is part of the key: a new valid spec (a route-only edit or a
        // renewed certificate as much as a new image) is this app's last good spec from the
        // pass that read it, whatever its status, so a later broken edit quarantines the app
        // on what it serves now.
        let unchanged = ctl
            .written_status
            .lock()
            .expect("status lock")
            .get(name)
            .is_some_and(|w| {
                w.status == status
                    && w.error == error
                    && w.spec
                        .as_ref()
                        .is_some_and(|(spec, file)| *spec == app.spec && *file == app.source.file)
            });
        if unchanged {
            continue;
        }
        let key = WrittenStatus {
            status,
            error: error.clone(),
            spec: Some((app.spec.clone(), app.source.file.clone())),
        };
        let record = crate::store::AppDesiredRecord {
            name: name.clone(),
            spec_json: serde_json::to_string(&app.spec).unwrap_or_default(),
            spec_hash: app.hash.clone(),
            source_file: app.source.file.display().to_string(),
            revision: desired.revision.clone(),
            at: now,
        };
        let result = ctl
            .store
            .record_app_pass(&record, status, error.as_deref())
            .await;
        // Its source file or last good spec may have changed: read them again next pass.
        *ctl.known.lock().expect("known lock") = None;
        match result {
            Ok(()) => {
                ctl.written_status
                    .lock()
                    .expect("status lock")
                    .insert(name.clone(), key);
            }
            Err(e) => warn!(app = %name, "cannot record status: {e}"),
        }
    }
    let quarantined = state
        .quarantined
        .iter()
        .map(|(name, q)| (name, &q.reason))
        .chain(
            desired
                .held
                .iter()
                .filter(|(name, _)| !state.quarantined.contains_key(*name)),
        );
    for (name, why) in quarantined {
        let key = WrittenStatus {
            status: AppStatus::Quarantined,
            error: Some(why.clone()),
            spec: None,
        };
        if ctl.written_status.lock().expect("status lock").get(name) == Some(&key) {
            continue;
        }
        if ctl
            .store
            .set_app_status(name, AppStatus::Quarantined, Some(why), now)
            .await
            .is_ok()
        {
            ctl.written_status
                .lock()
                .expect("status lock")
                .insert(name.clone(), key);
        }
    }
}
