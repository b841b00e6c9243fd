//! Backoff rules (pure; time is a parameter). Self-heal: the reconcile loop keeps one
//! `HealState` per app (persisted in the store, so a restart keeps it) and calls
//! `after_repair` each time it replaces a broken container; `plan` asks `blocked_reason`
//! before planning another repair, and an app whose state `crash_loop_reason` names is
//! reported `crash-looping`. Failing apps: the loop keeps a `RetryState` per app whose steps
//! failed (a missing image, a refused create) and calls `after_failure`; `plan` asks
//! `retry_blocked_reason` and holds that app's steps until its retry time, so one broken app
//! is retried with backoff instead of on every pass. `next_due` says when the next of these
//! backoffs ends (the loop's requeue time).

use serde::Serialize;

/// First backoff after a repair; doubles with each repair inside the window.
pub const BACKOFF_BASE_MS: i64 = 2_000;
pub const BACKOFF_MAX_MS: i64 = 300_000;
/// Repairs older than this are forgotten.
pub const REPAIR_WINDOW_MS: i64 = 600_000;
/// This many repairs inside the window quarantine the app until its spec changes.
pub const QUARANTINE_AFTER: usize = 5;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HealState {
    /// Spec hash the repairs were made for; a new hash starts from a clean slate.
    pub hash: String,
    /// Unix ms of recent repairs, oldest first.
    pub repairs: Vec<i64>,
    pub quarantined_since: Option<i64>,
    /// What the last repaired container did ("exited", "failed its health check: ..."),
    /// shown in the quarantine and crash-looping reasons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

impl HealState {
    fn recent(&self, now: i64) -> impl Iterator<Item = &i64> {
        self.repairs
            .iter()
            .filter(move |t| now - **t < REPAIR_WINDOW_MS)
    }

    /// When the next repair may happen (None: now).
    pub fn next_allowed_at(&self, now: i64) -> Option<i64> {
        let count = self.recent(now).count();
        let last = *self.recent(now).last()?;
        let exponent = (count.saturating_sub(1)).min(16) as u32;
        let delay = (BACKOFF_BASE_MS << exponent).min(BACKOFF_MAX_MS);
        Some(last + delay).filter(|at| *at > now)
    }
}

/// Why a repair must wait, or None when it may go ahead now.
pub fn blocked_reason(state: Option<&HealState>, hash: &str, now: i64) -> Option<String> {
    let state = state.filter(|s| s.hash == hash)?;
    if let Some(since) = state.quarantined_since {
        return Some(format!(
            "quarantined: {} repairs within {} minutes (since {since} ms){}; change the spec to try again",
            state.repairs.len(),
            REPAIR_WINDOW_MS / 60_000,
            last_failure_text(state)
        ));
    }
    state.next_allowed_at(now).map(|at| {
        format!(
            "self-heal backing off for {} ms after {} recent repairs",
            at - now,
            state.recent(now).count()
        )
    })
}

/// Why an app is crash-looping, when self-heal quarantined its spec `hash`: the repairs in
/// the window and what the last repaired container did. None otherwise.
pub fn crash_loop_reason(state: Option<&HealState>, hash: &str) -> Option<String> {
    let state = state.filter(|s| s.hash == hash && s.quarantined_since.is_some())?;
    Some(format!(
        "{} repairs within {} minutes{}; self-heal stopped until the spec changes",
        state.repairs.len(),
        REPAIR_WINDOW_MS / 60_000,
        last_failure_text(state)
    ))
}

fn last_failure_text(state: &HealState) -> String {
    match &state.last_failure {
        Some(failure) => format!(", last: {failure}"),
        None => String::new(),
    }
}

/// The state after one more repair at `now`.
pub fn after_repair(state: Option<&HealState>, hash: &str, now: i64) -> HealState {
    let mut repairs: Vec<i64> = state
        .filter(|s| s.hash == hash)
        .map(|s| s.recent(now).copied().collect())
        .unwrap_or_default();
    repairs.push(now);
    let quarantined_since = if repairs.len() >= QUARANTINE_AFTER {
        Some(now)
    } else {
        None
    };
    HealState {
        hash: hash.to_string(),
        repairs,
        quarantined_since,
        last_failure: None,
    }
}

/// A failing app's retry backoff: its last apply failed `failures` times in a row for this
/// spec hash; its steps wait until `retry_at`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetryState {
    pub hash: String,
    pub failures: u32,
    /// Unix ms before which the app's steps are held.
    pub retry_at: i64,
    /// The last failure, for the plan's reason.
    pub error: String,
}

/// The retry state after one more failed apply at `now` (a new spec hash starts over).
pub fn after_failure(state: Option<&RetryState>, hash: &str, error: &str, now: i64) -> RetryState {
    let failures = state.filter(|s| s.hash == hash).map_or(0, |s| s.failures) + 1;
    let exponent = (failures - 1).min(16);
    let delay = (BACKOFF_BASE_MS << exponent).min(BACKOFF_MAX_MS);
    RetryState {
        hash: hash.to_string(),
        failures,
        retry_at: now + delay,
        error: error.to_string(),
    }
}

/// Why a failing app's steps must wait, or None when they may be tried now.
pub fn retry_blocked_reason(state: Option<&RetryState>, hash: &str, now: i64) -> Option<String> {
    let state = state.filter(|s| s.hash == hash && s.retry_at > now)?;
    Some(format!(
        "retrying in {} s after {} failed attempt{}: {}",
        (state.retry_at - now + 999) / 1000,
        state.failures,
        if state.failures == 1 { "" } else { "s" },
        state.error
    ))
}

/// When the earliest self-heal or retry backoff after `now` ends: the next pass is due then
/// even if nothing wakes the loop.
pub fn next_due<'a>(
    heal: impl IntoIterator<Item = &'a HealState>,
    retry: impl IntoIterator<Item = &'a RetryState>,
    now: i64,
) -> Option<i64> {
    let heal = heal
        .into_iter()
        .filter(|h| h.quarantined_since.is_none())
        .filter_map(|h| h.next_allowed_at(now));
    let retry = retry.into_iter().map(|r| r.retry_at).filter(|at| *at > now);
    heal.chain(retry).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_quarantines() {
        let mut state: Option<HealState> = None;
        let mut now = 1_000_000;
        let mut waits = Vec::new();
        for _ in 0..QUARANTINE_AFTER - 1 {
            assert_eq!(blocked_reason(state.as_ref(), "h", now), None);
            let next = after_repair(state.as_ref(), "h", now);
            let at = next.next_allowed_at(now).expect("backoff after a repair");
            waits.push(at - now);
            assert!(blocked_reason(Some(&next), "h", now + 1).is_some());
            now = at;
            state = Some(next);
        }
        assert_eq!(waits, vec![2_000, 4_000, 8_000, 16_000]);
        let last = after_repair(state.as_ref(), "h", now);
        assert_eq!(last.quarantined_since, Some(now));
        let reason = blocked_reason(Some(&last), "h", now + REPAIR_WINDOW_MS * 10).unwrap();
        assert!(reason.starts_with("quarantined"), "{reason}");
        // A spec change clears it.
        assert_eq!(blocked_reason(Some(&last), "other", now), None);
    }

    #[test]
    fn only_a_quarantined_spec_is_crash_looping() {
        let mut state = None;
        for i in 0..QUARANTINE_AFTER as i64 {
            assert_eq!(crash_loop_reason(state.as_ref(), "h"), None, "repair {i}");
            let mut next = after_repair(state.as_ref(), "h", 1_000 + i * 100_000);
            next.last_failure = Some(format!("container c{i} exited"));
            state = Some(next);
        }
        let reason = crash_loop_reason(state.as_ref(), "h").expect("quarantined");
        assert_eq!(
            reason,
            "5 repairs within 10 minutes, last: container c4 exited; self-heal stopped until the spec changes"
        );
        let blocked = blocked_reason(state.as_ref(), "h", 500_000).unwrap();
        assert!(blocked.contains("last: container c4 exited"), "{blocked}");
        assert_eq!(crash_loop_reason(state.as_ref(), "new-hash"), None);
    }

    #[test]
    fn old_repairs_are_forgotten() {
        let first = after_repair(None, "h", 0);
        let later = after_repair(Some(&first), "h", REPAIR_WINDOW_MS + 1);
        assert_eq!(later.repairs, vec![REPAIR_WINDOW_MS + 1]);
        assert_eq!(
            later.next_allowed_at(REPAIR_WINDOW_MS + 1),
            Some(REPAIR_WINDOW_MS + 1 + BACKOFF_BASE_MS)
        );
    }

    #[test]
    fn a_failing_app_backs_off_and_a_new_spec_starts_over() {
        let first = after_failure(None, "h", "image x is not present", 1_000);
        assert_eq!((first.failures, first.retry_at), (1, 3_000));
        let reason = retry_blocked_reason(Some(&first), "h", 1_500).unwrap();
        assert_eq!(
            reason,
            "retrying in 2 s after 1 failed attempt: image x is not present"
        );
        assert_eq!(retry_blocked_reason(Some(&first), "h", 3_000), None);
        assert_eq!(retry_blocked_reason(Some(&first), "other", 1_500), None);
        let second = after_failure(Some(&first), "h", "again", 3_000);
        assert_eq!((second.failures, second.retry_at), (2, 7_000));
        let fresh = after_failure(Some(&second), "new", "e", 3_000);
        assert_eq!(fresh.failures, 1);
        let mut capped = second;
        for _ in 0..20 {
            capped = after_failure(Some(&capped), "h", "e", 0);
        }
        assert_eq!(capped.retry_at, BACKOFF_MAX_MS);
    }

    #[test]
    fn next_due_is_the_earliest_backoff_end() {
        let heal = after_repair(None, "h", 10_000); // next repair allowed at 12_000
        let retry = after_failure(None, "h", "e", 10_500); // retry at 12_500
        assert_eq!(next_due([&heal], [&retry], 11_000), Some(12_000));
        assert_eq!(next_due([&heal], [&retry], 12_100), Some(12_500));
        assert_eq!(next_due([&heal], [&retry], 13_000), None);
        let mut quarantined = heal.clone();
        quarantined.quarantined_since = Some(10_000);
        assert_eq!(next_due([&quarantined], [], 11_000), None);
    }
}
