//! berth's bridge network: create it once (cached), and repair duplicates of its name that
//! Docker 20.10's non-atomic name check can leave behind. Which duplicates may go is a pure
//! choice ([`duplicates_to_remove`]), unit-tested without Docker.
//!
//! Must not touch: a network this runtime does not own — a foreign one (no
//! `berth.managed=true`) or another berth instance's (a different `berth.instance`, or any
//! instance label when this runtime has none). Containers are not its business.

use super::connect::map_error;
use super::mapping::{owns, rfc3339};
use super::{Counters, DockerRuntime};
use crate::runtime::{RuntimeError, LABEL_INSTANCE, LABEL_MANAGED};
use bollard::errors::Error as BollardError;
use bollard::models::Network;
use bollard::network::{CreateNetworkOptions, ListNetworksOptions};
use std::collections::HashMap;

impl DockerRuntime {
    /// Creates the network `name` (labelled as this runtime's) unless this runtime already
    /// made sure of it, then removes this runtime's duplicates of the name.
    pub(super) async fn ensure_network_now(&self, name: &str) -> Result<(), RuntimeError> {
        if self
            .known_networks
            .lock()
            .map(|k| k.contains(name))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let mut labels = HashMap::from([(LABEL_MANAGED.to_string(), "true".to_string())]);
        if let Some(instance) = &self.instance {
            labels.insert(LABEL_INSTANCE.to_string(), instance.clone());
        }
        let options = CreateNetworkOptions {
            name: name.to_string(),
            check_duplicate: true,
            driver: "bridge".to_string(),
            labels,
            ..Default::default()
        };
        Counters::bump(&self.counters.network);
        match self.docker.create_network(options).await {
            Ok(_) => tracing::info!(network = %name, "created network"),
            Err(BollardError::DockerResponseServerError {
                status_code,
                message,
            }) if status_code == 409 || message.contains("already exists") => {}
            Err(e) => return Err(map_error(&self.endpoint, "create network", e)),
        }
        self.remove_duplicate_networks(name).await?;
        if let Ok(mut known) = self.known_networks.lock() {
            known.insert(name.to_string());
        }
        Ok(())
    }

    /// Docker 20.10's duplicate-name check is not atomic: two berth processes (say, one
    /// killed while its create was in flight and its successor) can create two networks
    /// with one name, after which every attach by name fails as ambiguous. Removes what
    /// [`duplicates_to_remove`] picks: this runtime's networks of that name but the oldest.
    async fn remove_duplicate_networks(&self, name: &str) -> Result<(), RuntimeError> {
        let options = ListNetworksOptions {
            filters: HashMap::from([("name".to_string(), vec![name.to_string()])]),
        };
        Counters::bump(&self.counters.list);
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| map_error(&self.endpoint, "list networks", e))?;
        let (remove, others) = duplicates_to_remove(&networks, name, self.instance.as_deref());
        for id in remove {
            Counters::bump(&self.counters.network);
            match self.docker.remove_network(&id).await {
                Ok(()) => tracing::warn!(network = %name, id, "removed a duplicate network"),
                Err(e) => {
                    tracing::warn!(network = %name, id, "cannot remove a duplicate network: {e}")
                }
            }
        }
        if others > 0 {
            tracing::warn!(
                network = %name,
                others,
                "networks of this name belong to another berth instance or to someone else and are left alone; if container starts fail as ambiguous, remove them or give berth another --network"
            );
        }
        Ok(())
    }
}

/// Of the networks named exactly `name`, the ids to remove and how many others share the
/// name but are not this runtime's to touch. The oldest network of the name (by creation
/// time, then id) is kept whoever owns it; of the rest, only those `instance` owns (berth's
/// label and exactly its `berth.instance`, see [`owns`]) are removed.
pub(super) fn duplicates_to_remove(
    networks: &[Network],
    name: &str,
    instance: Option<&str>,
) -> (Vec<String>, usize) {
    let mut same: Vec<&Network> = networks
        .iter()
        .filter(|n| n.name.as_deref() == Some(name))
        .collect();
    if same.len() < 2 {
        return (Vec::new(), 0);
    }
    same.sort_by_key(|n| (created_order(n.created.as_deref()), n.id.clone()));
    let mut remove = Vec::new();
    let mut others = 0;
    for extra in same.iter().skip(1) {
        match extra.id.as_deref() {
            Some(id) if owns(extra.labels.as_ref(), instance) => remove.push(id.to_string()),
            _ => others += 1,
        }
    }
    (remove, others)
}

/// Creation time as (unix seconds, nanoseconds) for ordering: Docker trims trailing zeros
/// of the fraction, so the texts do not sort as strings. Unknown times sort first.
fn created_order(created: Option<&str>) -> Option<(i64, u32)> {
    let time = rfc3339(created?)?;
    Some((time.as_second(), time.subsec_nanosecond().max(0) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(id: &str, name: &str, created: &str, labels: &[(&str, &str)]) -> Network {
        Network {
            id: Some(id.to_string()),
            name: Some(name.to_string()),
            created: Some(created.to_string()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    const T1: &str = "2026-01-01T00:00:01Z";
    const T2: &str = "2026-01-01T00:00:02Z";
    const T3: &str = "2026-01-01T00:00:03Z";
    const T4: &str = "2026-01-01T00:00:04Z";

    #[test]
    fn only_this_instances_younger_duplicates_go() {
        let nets = vec![
            network(
                "c",
                "net",
                T3,
                &[(LABEL_MANAGED, "true"), (LABEL_INSTANCE, "a")],
            ),
            network(
                "a",
                "net",
                T1,
                &[(LABEL_MANAGED, "true"), (LABEL_INSTANCE, "a")],
            ),
            network(
                "b",
                "net",
                T2,
                &[(LABEL_MANAGED, "true"), (LABEL_INSTANCE, "b")],
            ),
            network("d", "net", T4, &[]),
            network(
                "e",
                "net-other",
                T4,
                &[(LABEL_MANAGED, "true"), (LABEL_INSTANCE, "a")],
            ),
        ];
        assert_eq!(
            duplicates_to_remove(&nets, "net", Some("a")),
            (vec!["c".to_string()], 2)
        );
        // Instance b keeps a's oldest network and may only remove its own.
        assert_eq!(
            duplicates_to_remove(&nets, "net", Some("b")),
            (vec!["b".to_string()], 2)
        );
        // Without an instance berth owns only un-instanced networks: none here.
        assert_eq!(duplicates_to_remove(&nets, "net", None), (Vec::new(), 3));
    }

    #[test]
    fn creation_times_order_by_value_not_text() {
        let nets = vec![
            // As text, ".50001Z" sorts before ".5Z" ('0' < 'Z'); as a time it is later.
            network(
                "late",
                "n",
                "2026-01-01T00:00:01.50001Z",
                &[(LABEL_MANAGED, "true")],
            ),
            network(
                "early",
                "n",
                "2026-01-01T00:00:01.5Z",
                &[(LABEL_MANAGED, "true")],
            ),
        ];
        assert_eq!(
            duplicates_to_remove(&nets, "n", None),
            (vec!["late".to_string()], 0)
        );
        assert!(
            created_order(Some("2026-01-01T00:00:01.5Z"))
                < created_order(Some("2026-01-01T00:00:01.50001Z"))
        );
        assert!(created_order(None) < created_order(Some("1970-01-01T00:00:00Z")));
    }

    #[test]
    fn an_instance_less_runtime_removes_only_instance_less_duplicates() {
        let nets = vec![
            network("a", "berth", T1, &[(LABEL_MANAGED, "true")]),
            network(
                "b",
                "berth",
                T2,
                &[(LABEL_MANAGED, "true"), (LABEL_INSTANCE, "x")],
            ),
            network("c", "berth", T3, &[(LABEL_MANAGED, "true")]),
        ];
        assert_eq!(
            duplicates_to_remove(&nets, "berth", None),
            (vec!["c".to_string()], 1)
        );
        assert_eq!(
            duplicates_to_remove(&nets[..1], "berth", None),
            (Vec::new(), 0),
            "one network is no duplicate"
        );
    }
}
