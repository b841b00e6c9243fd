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
