#!/usr/bin/env bash
# Runs berth's comparison harness and records bench/RESULTS.md: convergence vs docker-compose
# and raw bollard, no-op pass cost, footprint with 1,000 apps, a rolling update under ~500
# req/s (wrk) vs compose recreate (3 and 5 replicas), scaling 3 -> 5 -> 3 under load with
# member-change latency, the long fault suite and HA takeover on PostgreSQL.
# Installs what it needs
# (scripts/setup.sh's packages plus wrk and Debian's docker-compose). Takes ~50 minutes.
#   scripts/bench.sh                      every section, writes bench/RESULTS.md
#   scripts/bench.sh --only rollout       some sections; the file keeps the others
#   (sections: footprint, noop, idle, converge, registry, rollout, scale, swarm, faults, ha;
#   swarm makes the engine a single-node swarm for its runs and leaves it when it was not one)
#   BERTH_BENCH_ROLLOUT_REPLICAS=3,5 BERTH_BENCH_ROLLOUT_RUNS=10 BERTH_BENCH_SCALE_CYCLES=10
#                                         (the defaults) set the rollout and scale sections' size
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ -x /usr/bin/docker-compose ] || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
exec cargo bench --bench compare -- --write "$@"
