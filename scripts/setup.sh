#!/usr/bin/env bash
# Installs what berth needs on a fresh Debian machine (nginx with its Lua module for dynamic
# upstreams, Debian's static busybox for the demo/test images, systemd's systemd-analyze and
# cargo-deb for the service and package tests, OpenSSL headers for git2's https, promtool
# from the prometheus package for the /metrics test, a pinned schemathesis in a venv for
# the API's schema test, git, and
# for the git transport tests openssh-server (sshd, ssh-keygen, ssh-keyscan), fcgiwrap (git
# http-backend behind nginx) and the openssl CLI, for the registry tests Debian's
# docker-registry and htpasswd (apache2-utils), Debian's chromium for the dashboard's
# browser test, PostgreSQL for the shared store's tests) and builds the local images. Idempotent
# and quick when all is present.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
# Dynamic upstreams (berth's default proxy mode): nginx's Lua module and resty.core.
dpkg -s libnginx-mod-http-lua >/dev/null 2>&1 || need+=(libnginx-mod-http-lua)
dpkg -s lua-resty-core >/dev/null 2>&1 || need+=(lua-resty-core)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd || need+=(busybox-static)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# git2 builds against OpenSSL (https) through pkg-config.
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# python3 with venv support for the schemathesis venv below.
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v git >/dev/null 2>&1 || need+=(git)
# tests/source_git_remote.rs: a private sshd and git http-backend behind nginx (TLS).
[ -x /usr/sbin/sshd ] && command -v ssh-keyscan >/dev/null 2>&1 || need+=(openssh-server openssh-client)
[ -x /usr/sbin/fcgiwrap ] || need+=(fcgiwrap)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# tests/registry_docker.rs: a real registry (distribution) with htpasswd auth (bcrypt).
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
# The systemd unit's test (systemd-analyze verify; systemd need not run as PID 1) and the
# Debian package's test (dpkg -i runs the maintainer scripts: adduser).
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v adduser >/dev/null 2>&1 || need+=(adduser)
# tests/dashboard_browser.rs: the dashboard in a real headless browser (DevTools protocol).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# tests/store_postgres.rs, tests/ha_postgres.rs: PostgreSQL servers the tests start themselves
# (initdb + pg_ctl in temp dirs); the system cluster is stopped below.
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The docker-registry package enables a system registry on :5000 where systemd runs; the
# tests start their own on free loopback ports, so that service is not wanted.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet docker-registry 2>/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
# The postgresql package starts a system cluster on :5432 where systemd runs; the tests
# start their own on free loopback ports, so that service is not wanted.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet postgresql 2>/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO systemctl disable --now postgresql >/dev/null 2>&1 || true
fi
# schemathesis (property-based API tester, tests/api_schemathesis.rs) in its own venv, pinned.
SCHEMATHESIS_VENV="${BERTH_SCHEMATHESIS_VENV:-/opt/berth-venv}"
SCHEMATHESIS_VERSION="4.32.5"
if ! "$SCHEMATHESIS_VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "setup: installing schemathesis $SCHEMATHESIS_VERSION into $SCHEMATHESIS_VENV"
  python3 -m venv "$SCHEMATHESIS_VENV"
  "$SCHEMATHESIS_VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
# cargo-deb builds the Debian package (scripts/package.sh, tests/package_deb.rs); compiled
# once (a few minutes), then quick.
command -v cargo-deb >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/cargo-deb" ] || {
  echo "setup: installing cargo-deb"
  cargo install cargo-deb --version 3.8.0 --locked --quiet
}
# sshd's privilege separation directory (compiled in; /run is emptied at boot). Starting
# no service: the tests run their own sshd on a free loopback port.
[ -d /run/sshd ] || { SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"; $SUDO mkdir -p -m 0755 /run/sshd; }
if ! docker info >/dev/null 2>&1; then
  echo "setup: the Docker engine is not reachable (docker info failed): start it or set DOCKER_HOST" >&2
  exit 1
fi
./examples/images/build.sh
