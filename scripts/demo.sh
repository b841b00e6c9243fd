#!/usr/bin/env bash
# The demo: installs what is missing, builds the local images and serves examples/apps
# through berth's private nginx on 127.0.0.1:8080 (Ctrl-C stops berth; containers and
# nginx keep running; `scripts/demo-clean.sh` removes them).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
./scripts/setup.sh
cargo build --release
echo "demo: try  curl 127.0.0.1:8080/web/   and   curl -H 'Host: api.localhost' 127.0.0.1:8080/"
exec ./target/release/berth serve --dir examples/apps "$@"
