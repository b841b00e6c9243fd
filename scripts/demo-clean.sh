#!/usr/bin/env bash
# Removes what the demo left running: berth's containers (label berth.managed=true without
# an instance label), its named volumes, its private nginx and its state dir.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
ids=$(docker ps -a --filter label=berth.managed=true --format '{{.ID}} {{.Label "berth.instance"}}' | awk 'NF==1 {print $1}')
[ -n "$ids" ] && docker rm -f $ids >/dev/null
if [ -f .berth/nginx/nginx.pid ]; then
  nginx -p .berth/nginx/ -c "$PWD/.berth/nginx/nginx.conf" -e "$PWD/.berth/nginx/logs/error.log" -s quit || true
fi
docker network rm berth >/dev/null 2>&1 || true
# The demo's named volumes (berth keeps them when apps are removed; here the demo is gone).
vols=$(docker volume ls --filter label=berth.managed=true --format '{{.Name}} {{.Label "berth.instance"}}' | awk 'NF==1 {print $1}')
[ -n "$vols" ] && docker volume rm $vols >/dev/null || true
rm -rf .berth
echo "demo-clean: done"
