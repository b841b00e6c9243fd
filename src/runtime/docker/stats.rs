//! Read-only one-shot stats of berth's containers (the autoscaler's collector): one stats
//! call per id, at most [`STATS_CONCURRENCY`] in flight, and the pure mapping of an engine
//! answer to [`ContainerStats`] (raw counters; the collector turns two samples into a share).
//!
//! Must not touch: anything but stats calls (no inspect, no mutation); the ids come from
//! `observe`, so they are berth's.

use super::connect::map_error;
use super::{Counters, DockerRuntime};
use crate::runtime::{ContainerStats, RuntimeError};
use bollard::container::{MemoryStatsStats, Stats, StatsOptions};
use bollard::errors::Error as BollardError;

/// One-shot stats calls in flight at once (each is a few cgroup reads in dockerd).
pub const STATS_CONCURRENCY: usize = 8;

/// Maps one engine stats answer; `None` for a container that is not running (the engine
/// answers with zeroed counters then).
fn stats_from(id: &str, stats: &Stats) -> Option<ContainerStats> {
    let cpu = &stats.cpu_stats;
    if cpu.cpu_usage.total_usage == 0 && cpu.system_cpu_usage.unwrap_or(0) == 0 {
        return None;
    }
    let online_cpus = cpu
        .online_cpus
        .map(|n| n as u32)
        .or_else(|| cpu.cpu_usage.percpu_usage.as_ref().map(|v| v.len() as u32))
        .filter(|n| *n > 0)
        .unwrap_or(1);
    let memory = &stats.memory_stats;
    // What `docker stats` shows: usage less the inactive page cache.
    let cache = match memory.stats {
        Some(MemoryStatsStats::V1(v1)) => v1.total_inactive_file,
        Some(MemoryStatsStats::V2(v2)) => v2.inactive_file,
        None => 0,
    };
    let usage = memory.usage.unwrap_or(0);
    Some(ContainerStats {
        id: id.to_string(),
        cpu_total_ns: cpu.cpu_usage.total_usage,
        system_cpu_ns: cpu.system_cpu_usage,
        online_cpus,
        memory_bytes: usage.saturating_sub(cache),
        memory_limit_bytes: memory.limit.unwrap_or(0),
    })
}

impl DockerRuntime {
    /// One one-shot stats call per id, at most [`STATS_CONCURRENCY`] at once, sorted by id.
    pub(super) async fn stats_of(
        &self,
        ids: &[String],
    ) -> Result<Vec<ContainerStats>, RuntimeError> {
        use futures_util::{stream, StreamExt};
        let calls: Vec<_> = ids
            .iter()
            .cloned()
            .map(|id| async move { self.stats_one(&id).await })
            .collect();
        let results: Vec<Result<Option<ContainerStats>, RuntimeError>> = stream::iter(calls)
            .buffer_unordered(STATS_CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::with_capacity(results.len());
        for result in results {
            if let Some(stats) = result? {
                out.push(stats);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// One one-shot stats call. `Ok(None)` when the container is gone or not running.
    async fn stats_one(&self, id: &str) -> Result<Option<ContainerStats>, RuntimeError> {
        use futures_util::StreamExt;
        Counters::bump(&self.counters.stats);
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut stream = self.docker.stats(id, Some(options));
        match stream.next().await {
            None => Ok(None),
            Some(Ok(stats)) => Ok(stats_from(id, &stats)),
            Some(Err(BollardError::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            })) => Ok(None),
            Some(Err(e)) => Err(map_error(&self.endpoint, "stats", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine answer (the fields bollard requires, cgroup counters as given).
    fn answer(total: u64, system: Option<u64>, online: Option<u64>) -> Stats {
        let cpu = serde_json::json!({
            "cpu_usage": {
                "total_usage": total, "usage_in_usermode": total, "usage_in_kernelmode": 0,
                "percpu_usage": [total, 0, 0, 0]
            },
            "system_cpu_usage": system,
            "online_cpus": online,
            "throttling_data": { "periods": 0, "throttled_periods": 0, "throttled_time": 0 }
        });
        serde_json::from_value(serde_json::json!({
            "read": "2026-01-01T00:00:00Z",
            "preread": "2026-01-01T00:00:00Z",
            "num_procs": 0,
            "pids_stats": {},
            "memory_stats": { "usage": 50_000, "limit": 1_000_000 },
            "blkio_stats": {},
            "cpu_stats": cpu,
            "precpu_stats": cpu,
            "storage_stats": {}
        }))
        .expect("a stats answer")
    }

    #[test]
    fn an_answer_maps_to_raw_counters() {
        let stats = stats_from("c1", &answer(7_000, Some(90_000), Some(2))).unwrap();
        assert_eq!(
            stats,
            ContainerStats {
                id: "c1".into(),
                cpu_total_ns: 7_000,
                system_cpu_ns: Some(90_000),
                online_cpus: 2,
                memory_bytes: 50_000,
                memory_limit_bytes: 1_000_000,
            }
        );
        // Without online_cpus the per-CPU list gives the count.
        let stats = stats_from("c1", &answer(7_000, None, None)).unwrap();
        assert_eq!((stats.online_cpus, stats.system_cpu_ns), (4, None));
    }

    #[test]
    fn a_stopped_container_answers_zeroes_and_is_left_out() {
        assert_eq!(stats_from("c1", &answer(0, Some(0), Some(2))), None);
        assert_eq!(stats_from("c1", &answer(0, None, None)), None);
    }
}
