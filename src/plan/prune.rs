//! The deletion budget (pure): decides whether a pass may remove the apps that left the
//! source. A pass that would remove more than `max_apps` apps, or more than `max_percent`
//! of the apps present, or every app because the source is empty, is refused (the caller
//! then plans with pruning off and records why) unless `allow_mass_prune` is set.
//! Must not touch: anything outside its arguments (no I/O, no clock).

use super::{render, Desired, Observed};
use serde::Serialize;
use std::collections::BTreeSet;

/// Limits on how many apps one pass may remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeletionBudget {
    /// Most apps one pass may remove (default 2).
    pub max_apps: u32,
    /// Most apps one pass may remove, as a percentage of the apps present (default 50).
    pub max_percent: u32,
    /// Lift every limit (`--allow-mass-prune`).
    pub allow_mass_prune: bool,
}

impl Default for DeletionBudget {
    fn default() -> Self {
        DeletionBudget {
            max_apps: 2,
            max_percent: 50,
            allow_mass_prune: false,
        }
    }
}

/// The budget's answer for one pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum PruneVerdict {
    /// Go ahead and remove these apps (possibly none).
    Allowed { apps: Vec<String> },
    /// Remove nothing this pass; `reason` says why and what to do.
    Refused {
        apps: Vec<String>,
        present: usize,
        reason: String,
    },
}

impl PruneVerdict {
    pub fn is_refused(&self) -> bool {
        matches!(self, PruneVerdict::Refused { .. })
    }
}

/// Apps present on the host (containers in any state, or proxy files) and, among them,
/// those the plan would remove: neither desired nor held. Empty when pruning is off anyway.
pub fn removals(desired: &Desired, observed: &Observed) -> (Vec<String>, usize) {
    let present: BTreeSet<&str> = observed
        .containers
        .iter()
        .map(|c| c.app.as_str())
        .chain(observed.services.iter().map(|s| s.app.as_str()))
        .chain(observed.proxy_files.keys().map(|f| render::app_of_file(f)))
        .collect();
    if desired.prune_blocked.is_some() {
        return (Vec::new(), present.len());
    }
    let removed = present
        .iter()
        .filter(|app| !desired.apps.contains_key(**app) && !desired.held.contains_key(**app))
        .map(|app| app.to_string())
        .collect();
    (removed, present.len())
}

/// Applies the budget to the removals the plan would make.
pub fn check(desired: &Desired, observed: &Observed, budget: &DeletionBudget) -> PruneVerdict {
    let (apps, present) = removals(desired, observed);
    if apps.is_empty() || budget.allow_mass_prune {
        return PruneVerdict::Allowed { apps };
    }
    let n = apps.len();
    let list = apps.join(", ");
    let reason = if desired.apps.is_empty() && desired.held.is_empty() && n == present {
        Some(format!(
            "the source has no apps, so this pass would remove every app ({list}); an empty source \
             is more often a wrong path, branch or mount than an intent: pass --allow-mass-prune \
             to remove them"
        ))
    } else if n > budget.max_apps as usize {
        Some(format!(
            "this pass would remove {n} apps ({list}), more than the budget of {}: pass \
             --allow-mass-prune (or raise --max-prune) to remove them",
            budget.max_apps
        ))
    } else if n * 100 > budget.max_percent as usize * present {
        Some(format!(
            "this pass would remove {n} of {present} apps ({list}), more than {}%: pass \
             --allow-mass-prune (or raise --max-prune-percent) to remove them",
            budget.max_percent
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => PruneVerdict::Refused {
            apps,
            present,
            reason,
        },
        None => PruneVerdict::Allowed { apps },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::DesiredApp;
    use crate::runtime::{ContainerState, ObservedContainer};
    use crate::spec::{AppSpec, SourceRef};
    use std::collections::BTreeMap;

    fn spec(name: &str) -> AppSpec {
        crate::spec::model::test_worker(name, "img")
    }

    fn desired(apps: &[&str], held: &[&str]) -> Desired {
        Desired {
            revision: "r".into(),
            apps: apps
                .iter()
                .map(|a| {
                    let source = SourceRef {
                        file: format!("{a}.yaml").into(),
                        line: 1,
                    };
                    (a.to_string(), DesiredApp::new(spec(a), source))
                })
                .collect(),
            held: held
                .iter()
                .map(|a| (a.to_string(), "broken".to_string()))
                .collect(),
            prune_blocked: None,
            proxy_listen: "127.0.0.1:8080".into(),
            proxy_tls: Default::default(),
            upstreams: Default::default(),
            leaving_deps: Default::default(),
        }
    }

    fn observed(apps: &[&str]) -> Observed {
        Observed {
            containers: apps
                .iter()
                .enumerate()
                .map(|(i, a)| ObservedContainer {
                    id: format!("id{i}"),
                    name: format!("berth-{a}"),
                    app: a.to_string(),
                    image: "img".into(),
                    image_id: String::new(),
                    spec_hash: "h".into(),
                    revision: "r0".into(),
                    state: ContainerState::Running,
                    host_port: None,
                    published: vec![],
                    created: 0,
                })
                .collect(),
            proxy_files: BTreeMap::new(),
            ..Observed::default()
        }
    }

    fn budget() -> DeletionBudget {
        DeletionBudget::default()
    }

    #[test]
    fn nothing_to_remove_is_allowed() {
        let v = check(
            &desired(&["a", "b"], &[]),
            &observed(&["a", "b"]),
            &budget(),
        );
        assert_eq!(v, PruneVerdict::Allowed { apps: vec![] });
    }

    #[test]
    fn one_of_two_and_two_of_six_are_within_budget() {
        let v = check(&desired(&["a"], &[]), &observed(&["a", "b"]), &budget());
        assert_eq!(
            v,
            PruneVerdict::Allowed {
                apps: vec!["b".into()]
            }
        );
        let v = check(
            &desired(&["a", "b", "c", "d"], &[]),
            &observed(&["a", "b", "c", "d", "e", "f"]),
            &budget(),
        );
        assert!(!v.is_refused(), "{v:?}");
    }

    #[test]
    fn five_of_six_is_refused_by_count() {
        let v = check(
            &desired(&["a"], &[]),
            &observed(&["a", "b", "c", "d", "e", "f"]),
            &budget(),
        );
        match v {
            PruneVerdict::Refused {
                apps,
                present,
                reason,
            } => {
                assert_eq!(apps, vec!["b", "c", "d", "e", "f"]);
                assert_eq!(present, 6);
                assert!(reason.contains("more than the budget of 2"), "{reason}");
                assert!(reason.contains("--allow-mass-prune"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn more_than_half_is_refused_even_within_the_count() {
        let v = check(
            &desired(&["a"], &[]),
            &observed(&["a", "b", "c"]),
            &budget(),
        );
        match v {
            PruneVerdict::Refused { reason, .. } => {
                assert!(reason.contains("2 of 3 apps"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_empty_source_never_removes_everything() {
        let v = check(&desired(&[], &[]), &observed(&["a"]), &budget());
        match v {
            PruneVerdict::Refused { reason, .. } => {
                assert!(reason.contains("the source has no apps"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // Not even with generous limits.
        let generous = DeletionBudget {
            max_apps: 100,
            max_percent: 100,
            allow_mass_prune: false,
        };
        assert!(check(&desired(&[], &[]), &observed(&["a", "b"]), &generous).is_refused());
    }

    #[test]
    fn allow_mass_prune_lifts_every_limit() {
        let allow = DeletionBudget {
            allow_mass_prune: true,
            ..budget()
        };
        let v = check(&desired(&[], &[]), &observed(&["a", "b", "c"]), &allow);
        assert_eq!(
            v,
            PruneVerdict::Allowed {
                apps: vec!["a".into(), "b".into(), "c".into()]
            }
        );
    }

    #[test]
    fn held_apps_and_pruning_off_are_not_removals() {
        let v = check(
            &desired(&["a"], &["b", "c"]),
            &observed(&["a", "b", "c"]),
            &budget(),
        );
        assert_eq!(v, PruneVerdict::Allowed { apps: vec![] });
        let mut off = desired(&[], &[]);
        off.prune_blocked = Some(crate::plan::PruneBlocked::DeletionBudget {
            reason: "refused".into(),
        });
        assert_eq!(
            check(&off, &observed(&["a", "b"]), &budget()),
            PruneVerdict::Allowed { apps: vec![] }
        );
    }

    #[test]
    fn proxy_files_count_as_present_apps() {
        let mut obs = observed(&["a"]);
        obs.proxy_files.insert("web.conf".into(), "x".into());
        obs.proxy_files.insert("web.loc".into(), "x".into());
        let (removed, present) = removals(&desired(&["a"], &[]), &obs);
        assert_eq!((removed, present), (vec!["web".to_string()], 2));
    }
}
