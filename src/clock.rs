//! The wall clock, read in one place. Only the imperative shell (reconcile, sources, the
//! autoscaler's loop, the API's handlers) calls it; pure code (`spec`, `plan`, the
//! autoscale policy) takes time as a parameter and must not use this module.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix milliseconds now (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
