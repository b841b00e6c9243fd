#!/usr/bin/env bash
# The test command: system packages + images, then fmt, clippy and every test against the
# real Docker engine, a real nginx, real git repos and a real SQLite file.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
./scripts/setup.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test -- --test-threads 4
