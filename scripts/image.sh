#!/usr/bin/env bash
# Builds the local image berth:<version> (no registry, no base image): a rootfs holding the
# berth binary, this host's nginx, the shared libraries both load (found with ldd), CA
# certificates and a minimal /etc/passwd, imported with `docker import`. It runs `berth
# serve` with /etc/berth/berth.toml; README "Install" shows the docker run line (Docker
# socket, host network, state volume).
# Usage: scripts/image.sh [--bin PATH] [--tag NAME:TAG]
#   --bin PATH   package this binary instead of building target/release/berth
set -euo pipefail
cd "$(dirname "$0")/.."
bin=""
tag=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    *) echo "usage: $0 [--bin PATH] [--tag NAME:TAG]" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  cargo build --release --bin berth
  bin=target/release/berth
fi
version=$("$bin" --version | awk '{print $2}')
tag=${tag:-berth:$version}
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || { echo "image: nginx is not installed (apt-get install nginx)" >&2; exit 1; }
root=$(mktemp -d "${TMPDIR:-/tmp}/berth-image.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/usr/bin "$root"/usr/sbin "$root"/etc/berth/apps "$root"/var/lib/berth \
  "$root"/tmp "$root"/etc/ssl/certs "$root"/var/log/nginx
cp "$bin" "$root/usr/bin/berth"
strip "$root/usr/bin/berth" 2>/dev/null || true
cp "$nginx" "$root/usr/sbin/nginx"
for lib in $( (ldd "$bin"; ldd "$nginx") | grep -o '/[^ ]*' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
[ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\nnobody:x:65534:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"
cp contrib/berth.toml "$root/etc/berth/berth.toml"
tar -C "$root" -c . | docker import \
  --change 'ENTRYPOINT ["/usr/bin/berth"]' \
  --change 'CMD ["serve"]' \
  --change 'ENV PATH=/usr/sbin:/usr/bin BERTH_CONFIG=/etc/berth/berth.toml' \
  --change 'WORKDIR /var/lib/berth' \
  --change 'VOLUME /var/lib/berth' \
  --change "LABEL org.opencontainers.image.title=berth org.opencontainers.image.version=$version" \
  - "$tag" >/dev/null
echo "$tag"
