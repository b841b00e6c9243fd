//! Self-heal state across restarts: loads the store's `heal_state` rows into
//! `Controller::heal` once, before the first observe, and writes an app's row in the pass
//! whose repair changed it. The rules (backoff, quarantine, crash-looping) are `plan::heal`'s.
//! Must not touch: Docker, nginx, statuses or events (the loop and `apply` record those).

use super::{Controller, ReconcileError};
use crate::plan::HealState;
use crate::runtime::ContainerRuntime;
use crate::store::HealRow;
use tracing::{info, warn};

/// Fills `ctl.heal` from the store the first time it is called (later calls return at once),
/// so a restarted berth keeps a crash loop's backoff and quarantine.
pub(crate) async fn ensure_loaded<R: ContainerRuntime>(
    ctl: &Controller<R>,
) -> Result<(), ReconcileError> {
    // A new leadership reads the state again: the previous leader may have changed it.
    if ctl
        .heal_reload
        .swap(false, std::sync::atomic::Ordering::SeqCst)
    {
        if let Err(e) = load(ctl).await {
            ctl.heal_reload
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(e);
        }
    }
    ctl.heal_loaded
        .get_or_try_init(|| load(ctl))
        .await
        .map(|_| ())
}

async fn load<R: ContainerRuntime>(ctl: &Controller<R>) -> Result<(), ReconcileError> {
    let rows = ctl.store.heal_states().await?;
    let mut heal = ctl.heal.lock().expect("heal lock");
    let mut quarantined = 0;
    for row in rows {
        quarantined += usize::from(row.quarantined_since.is_some());
        // A repair recorded in this process since start is newer than the store's.
        heal.entry(row.app.clone()).or_insert_with(|| from_row(row));
    }
    if !heal.is_empty() {
        info!(
            apps = heal.len(),
            quarantined, "loaded self-heal state from the store"
        );
    }
    Ok(())
}

/// Writes `state` as `app`'s row (logged, never fatal: the in-memory state still holds it).
pub(crate) async fn save<R: ContainerRuntime>(
    ctl: &Controller<R>,
    app: &str,
    state: &HealState,
    now: i64,
) {
    if let Err(e) = ctl.store.save_heal_state(&to_row(app, state, now)).await {
        warn!(
            app,
            "cannot persist self-heal state (a restart would forget it): {e}"
        );
    }
}

fn to_row(app: &str, state: &HealState, now: i64) -> HealRow {
    HealRow {
        app: app.to_string(),
        spec_hash: state.hash.clone(),
        repairs: state.repairs.clone(),
        quarantined_since: state.quarantined_since,
        last_failure: state.last_failure.clone(),
        updated_at: now,
    }
}

fn from_row(row: HealRow) -> HealState {
    HealState {
        hash: row.spec_hash,
        repairs: row.repairs,
        quarantined_since: row.quarantined_since,
        last_failure: row.last_failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_states_round_trip() {
        let state = HealState {
            hash: "h1".into(),
            repairs: vec![1_000, 3_000],
            quarantined_since: Some(3_000),
            last_failure: Some("container c exited".into()),
        };
        let row = to_row("web", &state, 4_000);
        assert_eq!(row.app, "web");
        assert_eq!(row.updated_at, 4_000);
        assert_eq!(from_row(row), state);
    }
}
