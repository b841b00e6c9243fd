//! The store's one listener: after an event or a scaling decision is committed, a copy is
//! offered to a bounded channel (`try_send`: a full or closed channel drops the copy and
//! counts it; recording never waits). The notifier (`crate::notify`) drains it.
//! Must not touch: SQL (the records are already committed when they get here).

use super::{NewEvent, NewScalingDecision, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// A record the store committed.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    Event(NewEvent),
    Scaling(NewScalingDecision),
}

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Copies dropped because the listener's channel was full or closed (process-wide).
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

impl Store {
    /// Offers every event and scaling decision recorded from now on to `sender`. One
    /// listener per store (clones share it); false when one is already set.
    pub fn tap(&self, sender: mpsc::Sender<Recorded>) -> bool {
        self.tap.set(sender).is_ok()
    }

    pub(super) fn tell(&self, record: impl FnOnce() -> Recorded) {
        if let Some(sender) = self.tap.get() {
            if sender.try_send(record()).is_err() {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
