//! What a pass reads before it plans: the source's specs parsed into `Desired` (per-app
//! isolation against the store's known apps, the deletion budget), and the store's
//! overrides (autoscaler replicas, failed rollouts), each cached until its inputs change.
//! Reads only: must not change the engine, nginx or the store.

use super::desired::{desired_from, DesiredState, KnownApp, LastGoodSpec};
use super::{tls, Controller, ReconcileError};
use crate::clock::now_ms;
use crate::plan::prune::{self, PruneVerdict};
use crate::plan::{render, Desired, Observed, Overrides, PruneBlocked};
use crate::runtime::ContainerRuntime;
use crate::source::Snapshot;
use crate::spec::{self, AppSpec, LoadedSpecs};
use crate::store::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tracing::warn;

/// What the store remembers about every app: its source file and last good spec. A last
/// good spec that no longer deserialises (an older berth wrote it) counts as none.
pub async fn known_apps(store: &Store) -> Result<BTreeMap<String, KnownApp>, ReconcileError> {
    let mut known = BTreeMap::new();
    for row in store.apps().await? {
        let last_good = match (&row.last_good_spec_json, &row.last_good_revision) {
            (Some(json), Some(revision)) => match serde_json::from_str::<AppSpec>(json) {
                Ok(spec) => Some(LastGoodSpec {
                    spec,
                    revision: revision.clone(),
                    source_file: row
                        .last_good_source_file
                        .clone()
                        .unwrap_or_else(|| row.source_file.clone()),
                }),
                Err(e) => {
                    warn!(app = %row.name, "ignoring the stored last good spec: {e}");
                    None
                }
            },
            _ => None,
        };
        known.insert(
            row.name.clone(),
            KnownApp {
                source_file: row.source_file.clone(),
                last_good,
            },
        );
    }
    Ok(known)
}

/// Apps with containers or proxy files on the host.
fn present_apps(observed: &Observed) -> BTreeSet<String> {
    observed
        .containers
        .iter()
        .map(|c| c.app.clone())
        .chain(observed.services.iter().map(|s| s.app.clone()))
        .chain(
            observed
                .proxy_files
                .keys()
                .map(|f| render::app_of_file(f).to_string()),
        )
        .collect()
}

/// The snapshot's specs, parsed once per revision (the revision is a content hash for a
/// directory and a commit for git, so an unchanged revision has unchanged specs).
fn loaded_specs<R: ContainerRuntime>(ctl: &Controller<R>, snapshot: &Snapshot) -> Arc<LoadedSpecs> {
    let mut cache = ctl.loaded.lock().expect("loaded lock");
    if let Some((revision, loaded)) = cache.as_ref() {
        if *revision == snapshot.revision {
            return loaded.clone();
        }
    }
    let loaded = Arc::new(spec::load_source_with(
        &snapshot.files,
        &snapshot.unreadable,
        &ctl.settings.spec_policy,
    ));
    *cache = Some((snapshot.revision.clone(), loaded.clone()));
    loaded
}

/// `known_apps`, read from the store only after this controller changed an app row.
pub(super) async fn cached_known_apps<R: ContainerRuntime>(
    ctl: &Controller<R>,
) -> Result<Arc<BTreeMap<String, KnownApp>>, ReconcileError> {
    if let Some(known) = ctl.known.lock().expect("known lock").clone() {
        return Ok(known);
    }
    let known = Arc::new(known_apps(&ctl.store).await?);
    *ctl.known.lock().expect("known lock") = Some(known.clone());
    Ok(known)
}

/// The inputs of one `desired_from` call and its answer (see `Controller::desired`).
pub(super) struct DesiredCache {
    revision: String,
    /// `tls::check_routes`' key: a renewed or broken TLS file is a new answer.
    tls_key: String,
    known: Arc<BTreeMap<String, KnownApp>>,
    present: BTreeSet<String>,
    state: Arc<DesiredState>,
    /// `state.desired`, shared with the passes that publish it.
    desired: Arc<Desired>,
}

/// What a pass wants: the state from `desired_from` (shared with the cache) and its
/// `Desired` as published in the last pass.
pub struct DesiredRead {
    pub state: Arc<DesiredState>,
    pub desired: Arc<Desired>,
}

/// Loads the snapshot's specs into `Desired` (per-app isolation against the store) and
/// applies the deletion budget: when it refuses, pruning is off for this pass. Unchanged
/// inputs (revision, known apps, apps present) reuse the last answer.
pub async fn read_desired<R: ContainerRuntime>(
    ctl: &Controller<R>,
    snapshot: &Snapshot,
    observed: &Observed,
) -> Result<(DesiredRead, PruneVerdict), ReconcileError> {
    let revision = snapshot.revision.as_str();
    let known = cached_known_apps(ctl).await?;
    let present = present_apps(observed);
    // TLS files are read every pass (a renewed certificate does not change the revision).
    let mut loaded = loaded_specs(ctl, snapshot);
    let mut tls_key = String::new();
    if let Some((checked, key)) =
        tls::check_routes(&loaded, &snapshot.files, &ctl.settings.tls, now_ms())
    {
        loaded = Arc::new(checked);
        tls_key = key;
    }
    let cached = ctl
        .desired
        .lock()
        .expect("desired lock")
        .as_ref()
        .and_then(|c| {
            (c.revision == revision
                && c.tls_key == tls_key
                && Arc::ptr_eq(&c.known, &known)
                && c.present == present)
                .then(|| DesiredRead {
                    state: c.state.clone(),
                    desired: c.desired.clone(),
                })
        });
    let mut read = match cached {
        Some(read) => read,
        None => {
            let mut state = desired_from(&loaded, revision, ctl.proxy.listen(), &known, &present);
            state.desired.upstreams = ctl.proxy.upstreams();
            state.desired.proxy_tls = ctl.settings.tls.listen();
            let read = DesiredRead {
                desired: Arc::new(state.desired.clone()),
                state: Arc::new(state),
            };
            *ctl.desired.lock().expect("desired lock") = Some(DesiredCache {
                revision: revision.to_string(),
                tls_key,
                known,
                present,
                state: read.state.clone(),
                desired: read.desired.clone(),
            });
            read
        }
    };
    let verdict = prune::check(&read.state.desired, observed, &ctl.settings.deletion_budget);
    if let PruneVerdict::Refused { reason, .. } = &verdict {
        let mut state = (*read.state).clone();
        state.desired.prune_blocked = Some(PruneBlocked::DeletionBudget {
            reason: reason.clone(),
        });
        read = DesiredRead {
            desired: Arc::new(state.desired.clone()),
            state: Arc::new(state),
        };
    }
    Ok((read, verdict))
}

/// Overrides kept in the store: autoscaler replicas and failed rollouts.
pub async fn read_overrides(store: &Store) -> Result<Overrides, ReconcileError> {
    Ok(Overrides {
        replicas: store.replica_overrides().await?,
        failed_rollouts: store
            .failed_rollouts()
            .await?
            .into_iter()
            .map(|(app, failed)| (app, failed.spec_hash))
            .collect(),
    })
}

/// `read_overrides`, read again only after a write through this process's store (the
/// autoscaler's overrides, this loop's failed rollouts) or a new leadership.
pub(super) async fn cached_overrides<R: ContainerRuntime>(
    ctl: &Controller<R>,
) -> Result<Overrides, ReconcileError> {
    let generation = ctl.store.overrides_generation();
    if let Some((seen, overrides)) = ctl.overrides.lock().expect("overrides lock").as_ref() {
        if *seen == generation {
            return Ok((**overrides).clone());
        }
    }
    let overrides = read_overrides(&ctl.store).await?;
    *ctl.overrides.lock().expect("overrides lock") =
        Some((generation, Arc::new(overrides.clone())));
    Ok(overrides)
}
