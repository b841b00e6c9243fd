#!/usr/bin/env bash
# Builds the local demo images used by berth's tests and demo, without any registry:
#   berth-demo:v1      busybox httpd on :8080, / = "v1\n",     /healthz = "ok\n"
#   berth-demo:v2      same, / = "v2\n"
#   berth-demo:broken  / = "broken\n", no /healthz (an HTTP probe gets 404)
# Each image is a tiny rootfs holding Debian's static busybox (package busybox-static)
# plus applet symlinks (sh, sleep, wget, ...), imported with `docker import`.
#
# Idempotent: images that already exist with the current build stamp are kept, so a second
# run takes well under a second. `--force` rebuilds all of them.
set -euo pipefail

BUSYBOX=${BUSYBOX:-/bin/busybox}
REPO=berth-demo
# Bump when the image contents change, so existing stale images get rebuilt.
STAMP=3

force=0
for arg in "$@"; do
  case "$arg" in
    --force|-f) force=1 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument: $arg (usage: build.sh [--force])" >&2; exit 2 ;;
  esac
done

if ! command -v docker >/dev/null 2>&1; then
  echo "build.sh: the docker CLI is not installed" >&2
  exit 1
fi
if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  echo "build.sh: cannot reach the Docker engine (DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock})" >&2
  exit 1
fi
if [[ ! -x "$BUSYBOX" ]] || ! applets=$("$BUSYBOX" --list 2>/dev/null) || [[ -z "$applets" ]]; then
  echo "build.sh: static busybox not found at $BUSYBOX: run 'apt-get install busybox-static'" >&2
  exit 1
fi
if command -v ldd >/dev/null 2>&1 && ldd "$BUSYBOX" >/dev/null 2>&1; then
  echo "build.sh: $BUSYBOX is dynamically linked; the images need the static one: run 'apt-get install busybox-static'" >&2
  exit 1
fi

# Serialise concurrent runs (several test binaries may call this at once).
lockfile="${TMPDIR:-/tmp}/berth-demo-images.lock"
exec 9>"$lockfile"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi

current() { # image -> 0 when it exists with our stamp
  local got
  got=$(docker image inspect --format '{{ index .Config.Labels "berth.demo.stamp" }}' "$1" 2>/dev/null) || return 1
  [[ "$got" == "$STAMP" ]]
}

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-images.XXXXXX")
trap 'rm -rf "$work"' EXIT

build() { # tag body with_healthz
  local tag=$1 body=$2 healthz=$3
  local image="$REPO:$tag"
  if [[ $force -eq 0 ]] && current "$image"; then
    echo "build.sh: $image is up to date"
    return 0
  fi
  local old
  old=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  local root="$work/$tag"
  mkdir -p "$root/bin" "$root/www" "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev"
  chmod 1777 "$root/tmp"
  cp "$BUSYBOX" "$root/bin/busybox"
  local applet
  for applet in $("$BUSYBOX" --list); do
    [[ "$applet" == busybox ]] && continue
    ln -sf busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  printf '%s\n' "$body" >"$root/www/index.html"
  if [[ "$healthz" == yes ]]; then
    printf 'ok\n' >"$root/www/healthz"
  fi
  tar --numeric-owner --owner=0 --group=0 -C "$root" -cf - . |
    docker import \
      --change 'CMD ["/bin/busybox","httpd","-f","-p","8080","-h","/www"]' \
      --change 'EXPOSE 8080/tcp' \
      --change 'ENV PATH=/bin' \
      --change 'WORKDIR /' \
      --change "LABEL berth.demo.stamp=$STAMP" \
      --message "berth demo image $tag" \
      - "$image" >/dev/null
  # Drop the image this one replaced (--force or a new stamp) unless a container still uses it.
  if [[ -n "$old" && "$old" != "$(docker image inspect --format '{{.Id}}' "$image")" ]]; then
    docker image rm "$old" >/dev/null 2>&1 || true
  fi
  echo "build.sh: built $image"
}

build v1 v1 yes
build v2 v2 yes
build broken broken no
