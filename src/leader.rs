//! Leadership of highly available controllers: which controller may act (mutate the
//! engine, write desired state) when several share one PostgreSQL store. `Leadership` is
//! the in-memory answer every task reads (`may_act`, the API's `view`); `run` is the lease
//! task that keeps it true: every `renew` it runs one `Store::try_lease` round trip, which
//! renews this controller's lease, takes an expired one (a new epoch) or learns who leads
//! (a follower then also tries right when that lease ends, by the database's clock).
//!
//! Safety: a leader acts only until `valid_until`, measured with the monotonic clock from
//! the moment it *sent* its last successful renewal plus 80% of the lease. The database
//! starts the lease's duration later than that, so a leader that cannot renew (database
//! gone, process stalled) stops acting before its lease can expire and another controller
//! can take it. The store refuses a deposed leader's late desired-state writes by epoch
//! (`store::Fence`). With a SQLite store there is one controller, which always leads.
//! Must not touch: the engine, nginx, desired state (it only reads and writes the lease).

use crate::source::Waker;
use crate::store::{Fence, LeaseTerms, Store};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Default `--lease-duration`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Default `--lease-renew`.
pub const DEFAULT_RENEW: Duration = Duration::from_secs(3);

/// The lease task's settings.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub duration: Duration,
    pub renew: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings {
            duration: DEFAULT_LEASE,
            renew: DEFAULT_RENEW,
        }
    }
}

/// `GET /api/v1/leader`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderView {
    /// This controller may act now.
    pub is_leader: bool,
    /// The holder of the lease as last seen ("" before any controller took it); this
    /// controller's id with a SQLite store.
    pub leader: String,
    /// The lease's epoch (0 with a SQLite store or before any controller took it).
    pub epoch: i64,
    /// When the lease ends, unix milliseconds in the database's clock (0 with SQLite).
    pub lease_expires_at: i64,
}

#[derive(Debug, Clone)]
struct State {
    leader: String,
    epoch: i64,
    lease_expires_at: i64,
    /// Until when this controller may act (None: it does not hold the lease).
    valid_until: Option<Instant>,
}

/// Who leads, as this controller knows it. Shared (`Arc`) by the loop, the API, the
/// autoscaler and the lease task.
#[derive(Debug)]
pub struct Leadership {
    id: String,
    /// `None`: a SQLite store, always the leader.
    fence: Option<Fence>,
    state: Mutex<State>,
    changes: AtomicU64,
}

impl Leadership {
    /// The one controller of a SQLite store: always the leader, no lease.
    pub fn single(id: &str) -> Arc<Leadership> {
        Arc::new(Leadership {
            id: id.to_string(),
            fence: None,
            state: Mutex::new(State {
                leader: id.to_string(),
                epoch: 0,
                lease_expires_at: 0,
                valid_until: None,
            }),
            changes: AtomicU64::new(0),
        })
    }

    /// A controller that leads only while it holds the store's lease; `store`'s writes of
    /// desired state are fenced by its epoch from now on.
    pub fn leased(id: &str, store: &Store) -> Arc<Leadership> {
        let fence = Fence::new(id);
        store.set_fence(fence.clone());
        Arc::new(Leadership {
            id: id.to_string(),
            fence: Some(fence),
            state: Mutex::new(State {
                leader: String::new(),
                epoch: 0,
                lease_expires_at: 0,
                valid_until: None,
            }),
            changes: AtomicU64::new(0),
        })
    }

    /// This controller's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// True when leadership depends on a lease (PostgreSQL store).
    pub fn is_leased(&self) -> bool {
        self.fence.is_some()
    }

    /// May this controller mutate the engine and write desired state now?
    pub fn may_act(&self) -> bool {
        self.fence.is_none() || self.acting_epoch().is_some()
    }

    /// The epoch this controller acts under, while it may act (0 with SQLite).
    pub fn acting_epoch(&self) -> Option<i64> {
        let state = self.state.lock().expect("leadership lock");
        if self.fence.is_none() {
            return Some(0);
        }
        state
            .valid_until
            .filter(|until| Instant::now() < *until)
            .map(|_| state.epoch)
    }

    /// The epoch of the lease this controller last held (0: none).
    fn held_epoch(&self) -> i64 {
        let state = self.state.lock().expect("leadership lock");
        if state.leader == self.id && self.fence.is_some() {
            state.epoch
        } else {
            0
        }
    }

    /// What `GET /api/v1/leader` answers.
    pub fn view(&self) -> LeaderView {
        let is_leader = self.may_act();
        let state = self.state.lock().expect("leadership lock");
        LeaderView {
            is_leader,
            leader: state.leader.clone(),
            epoch: state.epoch,
            lease_expires_at: state.lease_expires_at,
        }
    }

    /// Times this controller became the leader (`berth_leader_changes_total`).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Records one `try_lease` answer, sent at `sent`; true when this controller just
    /// became the leader (a new epoch).
    fn observe(&self, row: &crate::store::LeaseRow, sent: Instant, lease: Duration) -> bool {
        let mine = row.granted && row.holder == self.id;
        let mut state = self.state.lock().expect("leadership lock");
        let gained = mine && (state.valid_until.is_none() || state.epoch != row.epoch);
        state.leader = row.holder.clone();
        state.epoch = row.epoch;
        state.lease_expires_at = row.expires_at;
        state.valid_until = mine.then(|| sent + lease.mul_f64(0.8));
        if let Some(fence) = &self.fence {
            fence.set_epoch(if mine { row.epoch } else { 0 });
        }
        if gained {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
        gained
    }

    /// Stops acting (a clean stop); answers the epoch held, to release it.
    fn resign(&self) -> Option<i64> {
        let epoch = self.acting_epoch();
        let mut state = self.state.lock().expect("leadership lock");
        state.valid_until = None;
        if let Some(fence) = &self.fence {
            fence.set_epoch(0);
        }
        epoch
    }
}

/// The lease task: tries to take or renew the lease every `settings.renew`, wakes the loop
/// when this controller becomes the leader or loses the lease. A failed round trip is
/// logged (once per distinct error) and retried at the next tick; meanwhile the leader
/// keeps acting only until its `valid_until`. Runs until aborted; `release` ends the lease
/// on a clean stop.
pub async fn run(store: Store, leadership: Arc<Leadership>, settings: LeaseSettings, wake: Waker) {
    let duration_ms = i64::try_from(settings.duration.as_millis()).unwrap_or(i64::MAX);
    let mut last_error: Option<String> = None;
    let mut was_acting = false;
    // A follower tries again right after another controller's lease ends (database clock),
    // not only at its next renewal tick: takeover = the lease's end + one round trip.
    let mut until_expiry: Option<Duration> = None;
    loop {
        // The epoch this controller last held, even when its validity lapsed: renewing it is
        // safe as long as no other controller took the lease (the epoch would have moved).
        let held_epoch = leadership.held_epoch();
        let sent = Instant::now();
        let terms = LeaseTerms {
            holder: leadership.id(),
            held_epoch,
            duration_ms,
        };
        match store.try_lease(&terms).await {
            Ok(row) => {
                if last_error.take().is_some() {
                    info!("the leader lease answers again");
                }
                until_expiry = (!row.granted)
                    .then(|| Duration::from_millis((row.expires_at - row.now).max(0) as u64 + 20));
                if leadership.observe(&row, sent, settings.duration) {
                    info!(
                        id = leadership.id(),
                        epoch = row.epoch,
                        "this controller is the leader now"
                    );
                }
            }
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    warn!("store down: cannot renew or take the leader lease: {text}");
                }
                last_error = Some(text);
            }
        }
        let acting = leadership.may_act();
        if acting != was_acting {
            if !acting {
                warn!(
                    id = leadership.id(),
                    "this controller is a follower now: it stops mutating containers and \
                     desired state"
                );
            }
            wake(if acting { "leader" } else { "follower" });
            was_acting = acting;
        }
        // A leader that cannot renew must notice the end of its validity on time.
        let sleep = match leadership
            .state
            .lock()
            .expect("leadership lock")
            .valid_until
        {
            Some(until) if acting => settings
                .renew
                .min(until.saturating_duration_since(Instant::now())),
            _ => settings
                .renew
                .min(until_expiry.take().unwrap_or(settings.renew)),
        };
        tokio::time::sleep(sleep.max(Duration::from_millis(50))).await;
    }
}

/// Ends this controller's lease at once (a clean stop), so a follower takes over at its next
/// attempt. Logged, never fatal.
pub async fn release(store: &Store, leadership: &Leadership) {
    if !leadership.is_leased() {
        return;
    }
    if let Some(epoch) = leadership.resign() {
        match store.release_lease(leadership.id(), epoch).await {
            Ok(true) => info!(epoch, "released the leader lease"),
            Ok(false) => {}
            Err(e) => warn!("cannot release the leader lease (it expires by itself): {e}"),
        }
    }
}

/// Why a one-shot command (`berth apply --once`) may not act on a shared store.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "controller {leader} holds the leader lease (epoch {epoch}); berth apply --once acts \
         only as the leader: let the running leader apply, or stop it and run this again"
    )]
    Held { leader: String, epoch: i64 },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// For a one-shot command on a PostgreSQL store: takes the lease once (or fails saying who
/// holds it). A SQLite store needs nothing.
pub async fn take_once(
    store: &Store,
    leadership: &Leadership,
    settings: &LeaseSettings,
) -> Result<(), LeaseError> {
    if !leadership.is_leased() {
        return Ok(());
    }
    let sent = Instant::now();
    let row = store
        .try_lease(&LeaseTerms {
            holder: leadership.id(),
            held_epoch: 0,
            duration_ms: i64::try_from(settings.duration.as_millis()).unwrap_or(i64::MAX),
        })
        .await?;
    leadership.observe(&row, sent, settings.duration);
    if leadership.may_act() {
        Ok(())
    } else {
        Err(LeaseError::Held {
            leader: row.holder,
            epoch: row.epoch,
        })
    }
}

/// A controller id unique to this process: host name, pid and a random suffix.
pub fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "berth".to_string());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}-{}-{:05x}", std::process::id(), nanos & 0xfffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LeaseRow;

    fn row(holder: &str, epoch: i64) -> LeaseRow {
        LeaseRow {
            holder: holder.to_string(),
            epoch,
            expires_at: 10_000,
            now: 0,
            granted: true,
        }
    }

    #[test]
    fn single_always_leads() {
        let l = Leadership::single("a");
        assert!(l.may_act());
        assert_eq!(l.acting_epoch(), Some(0));
        assert_eq!(l.view().leader, "a");
    }

    #[test]
    fn leads_only_while_valid_and_counts_each_new_epoch() {
        let l = Leadership {
            id: "a".into(),
            fence: Some(Fence::new("a")),
            state: Mutex::new(State {
                leader: String::new(),
                epoch: 0,
                lease_expires_at: 0,
                valid_until: None,
            }),
            changes: AtomicU64::new(0),
        };
        assert!(!l.may_act());
        assert!(l.observe(&row("a", 1), Instant::now(), Duration::from_secs(10)));
        assert_eq!(l.acting_epoch(), Some(1));
        assert_eq!(l.fence.as_ref().unwrap().epoch(), 1);
        // A renewal of the same epoch is no change.
        assert!(!l.observe(&row("a", 1), Instant::now(), Duration::from_secs(10)));
        // Sent long ago: the validity already ended, so it must not act.
        let old = Instant::now() - Duration::from_secs(9);
        l.observe(&row("a", 1), old, Duration::from_secs(10));
        assert!(!l.may_act());
        // Another controller took it.
        assert!(!l.observe(&row("b", 2), Instant::now(), Duration::from_secs(10)));
        assert!(!l.may_act());
        assert_eq!(l.fence.as_ref().unwrap().epoch(), 0);
        assert_eq!(l.view().leader, "b");
        assert!(l.observe(&row("a", 3), Instant::now(), Duration::from_secs(10)));
        assert_eq!(l.changes(), 2);
    }
}
