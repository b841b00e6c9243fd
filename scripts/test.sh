#!/usr/bin/env bash
# The test command: system packages + images, then fmt, clippy and every test against the
# real Docker engine (and a single-node swarm the swarm tests create and leave), a real
# nginx, real git repos, a real registry, a real SQLite file and PostgreSQL servers the
# tests start in temp dirs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
./scripts/setup.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test -- --test-threads 4
