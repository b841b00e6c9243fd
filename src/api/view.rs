//! The API's read-only view of berth: the `StatusView` trait the router is generic over,
//! and `ReadStore`, a store handle that only exposes reads. Owns the one adapter from the
//! reconcile `Controller` to that view.
//!
//! Invariant (the API never writes): the router sees berth only through `StatusView`, whose
//! methods return copies or read-only handles. `ReadStore` wraps `&Store` privately and
//! forwards only SELECTs; no method here reaches a mutating runtime call (create, start,
//! stop, remove, network), a proxy write or reload, or a store write. The pending plan is
//! computed with `reconcile::plan_only`, which observes (one list call), reads the proxy
//! files and probes unknown containers, and mutates nothing. `tests/api_router.rs` checks
//! the source of `src/api/` for calls that would break this.

use crate::health::ProbeRecord;
use crate::leader::LeaderView;
use crate::metrics::MetricsSnapshot;
use crate::plan::Plan;
use crate::reconcile::{self, Controller, LastPass, ReconcileError};
use crate::runtime::{
    ContainerObserver, ContainerRuntime, LogLines, LogRequest, ObservedContainer, RuntimeError,
};
use crate::store::{
    AppRow, EventQuery, EventRow, FailedRollout, ReplicaOverrideRow, ScalingDecisionRow, Store,
    StoreError,
};
use std::collections::BTreeMap;
use std::future::Future;

/// Read-only access to the store: the SELECTs the API needs and nothing else.
#[derive(Debug, Clone, Copy)]
pub struct ReadStore<'a> {
    store: &'a Store,
}

impl<'a> ReadStore<'a> {
    pub fn new(store: &'a Store) -> Self {
        Self { store }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    pub async fn apps(&self) -> Result<Vec<AppRow>, StoreError> {
        self.store.apps().await
    }

    pub async fn app(&self, name: &str) -> Result<Option<AppRow>, StoreError> {
        self.store.app(name).await
    }

    pub async fn events(&self, query: &EventQuery) -> Result<Vec<EventRow>, StoreError> {
        self.store.events(query).await
    }

    pub async fn scaling_decisions(
        &self,
        app: &str,
        limit: u32,
    ) -> Result<Vec<ScalingDecisionRow>, StoreError> {
        self.store.scaling_decisions(app, limit).await
    }

    pub async fn replica_override_rows(&self) -> Result<Vec<ReplicaOverrideRow>, StoreError> {
        self.store.replica_override_rows().await
    }

    pub async fn failed_rollouts(&self) -> Result<BTreeMap<String, FailedRollout>, StoreError> {
        self.store.failed_rollouts().await
    }
}

/// Everything the API may know about berth. Implementations return copies or read-only
/// handles; see the module doc for the invariant.
pub trait StatusView: Send + Sync + 'static {
    /// The store, reads only.
    fn store(&self) -> ReadStore<'_>;

    /// Runs `f` on the last pass (None before the first one).
    fn with_last_pass<T>(&self, f: impl FnOnce(Option<&LastPass>) -> T) -> T;

    /// The prober's latest record for a container (health, last probe time and error).
    fn probe(&self, container_id: &str) -> Option<ProbeRecord>;

    /// A copy of the loop's counters.
    fn metrics(&self) -> MetricsSnapshot;

    /// Who leads (HA) and whether this controller does.
    fn leader(&self) -> LeaderView;

    /// What the next pass would do, computed now without doing it.
    fn pending_plan(&self) -> impl Future<Output = Result<Plan, ReconcileError>> + Send;

    /// berth's containers now (one labelled list call through the observer).
    fn containers(
        &self,
    ) -> impl Future<Output = Result<Vec<ObservedContainer>, RuntimeError>> + Send;

    /// One container's log lines (the observer's read-only `logs`).
    fn logs(
        &self,
        id: &str,
        request: &LogRequest,
    ) -> impl Future<Output = Result<LogLines, RuntimeError>> + Send;
}

impl<R: ContainerRuntime> StatusView for Controller<R> {
    fn store(&self) -> ReadStore<'_> {
        ReadStore::new(Controller::store(self))
    }

    fn with_last_pass<T>(&self, f: impl FnOnce(Option<&LastPass>) -> T) -> T {
        let last = self.last_pass();
        f(last.as_deref())
    }

    fn probe(&self, container_id: &str) -> Option<ProbeRecord> {
        self.probe_record(container_id)
    }

    fn metrics(&self) -> MetricsSnapshot {
        let mut snapshot = self.counters().snapshot();
        let leadership = self.leadership();
        snapshot.leader_id = leadership.id().to_string();
        snapshot.is_leader = leadership.may_act();
        snapshot.leader_changes = leadership.changes();
        snapshot
    }

    fn leader(&self) -> LeaderView {
        self.leadership().view()
    }

    async fn pending_plan(&self) -> Result<Plan, ReconcileError> {
        reconcile::plan_only(self).await.map(|(plan, _issues)| plan)
    }

    async fn containers(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        self.observer().observe().await
    }

    async fn logs(&self, id: &str, request: &LogRequest) -> Result<LogLines, RuntimeError> {
        self.observer().logs(id, request).await
    }
}
