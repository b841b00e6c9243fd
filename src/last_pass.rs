//! What the last reconcile pass saw and decided: the value the loop publishes (through a
//! `tokio::sync::watch` of `Arc<LastPass>`) for its readers, the API, the prober and the
//! autoscaler. Data only: it must not hold handles to Docker, nginx or the store, so a
//! reader of it can change nothing.

use crate::plan::prune::PruneVerdict;
use crate::plan::{Desired, Observed, Plan};
use crate::source::SourceStatus;
use crate::spec::SpecIssue;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why an app is quarantined and what it runs meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantine {
    /// `file:line:column: field: message` of the problem.
    pub reason: String,
    /// The file at fault.
    pub file: String,
    /// Revision of the last good spec it keeps running; `None` when berth has none (the
    /// app is then held exactly as it runs).
    pub last_good_revision: Option<String>,
}

/// What the last pass saw and decided.
#[derive(Debug, Clone, Default)]
pub struct LastPass {
    pub at: i64,
    pub trigger: String,
    /// Shared with the loop's cache: publishing a pass does not copy every spec.
    pub desired: Arc<Desired>,
    pub observed: Observed,
    pub plan: Plan,
    pub issues: Vec<SpecIssue>,
    /// Apps running on their last good spec (or held), and why.
    pub quarantined: BTreeMap<String, Quarantine>,
    /// The deletion budget's answer for this pass.
    pub prune: Option<PruneVerdict>,
    pub source: SourceStatus,
    pub duration_ms: u128,
}
