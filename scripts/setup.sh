#!/usr/bin/env bash
# Installs everything kubexm and its tests need on a fresh Debian 12 machine (run as root),
# into a virtualenv at .venv. Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# haproxy, keepalived and kubectl validate the configs and kubeconfigs kubexm generates; socat relays files
# between the benchmark's and the relay tests' hosts; nft makes a relay test's firewall drop the relay port.
# tcsh is a login shell that does not read POSIX sh: the command lines kubexm sends must still work under it.
apt_packages=(openssh-server openssh-client sudo iproute2 openssl debootstrap systemd-container haproxy keepalived socat nftables docker-registry skopeo tcsh)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.kubexm-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # pip's own chatter goes to a log; it is shown only when the install fails.
  if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[dev]'; } >.venv/install.log 2>&1; then
    cat .venv/install.log >&2
    echo "setup: pip install failed (log above); check that the Python package index is reachable" >&2
    exit 1
  fi
  touch "$stamp"
fi
