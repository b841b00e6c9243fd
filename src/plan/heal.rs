//! Self-heal backoff and quarantine rules (pure; time is a parameter). The reconcile loop
//! keeps one `HealState` per app (persisted in the store, so a restart keeps it) and calls
//! `after_repair` each time it replaces a broken container; `plan` asks `blocked_reason`
//! before planning another repair, and an app whose state `crash_loop_reason` names is
//! reported `crash-looping`.

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
}
