#!/usr/bin/env bash
# Installs what building and testing cio needs on Debian 12 (idempotent).
set -euo pipefail
# postgresql and libpq-dev: cio-pg (built when libpq is found) and its tests,
# which run a throw-away PostgreSQL 15 cluster (tests/pg_server.sh).
pkgs=(build-essential cmake pkg-config check clang libclang-rt-14-dev time util-linux liburing-dev
      postgresql libpq-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "deps: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The network tests resolve "localhost" (as users' programs do). A minimal
# system image (debootstrap --variant=minbase) has no /etc/hosts at all, so
# the name would go to DNS and fail: give it the standard loopback entries
# then. Existing files are left alone when they already resolve it.
if ! getent hosts localhost >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "deps: adding localhost to /etc/hosts (it did not resolve)" >&2
  hosts='127.0.0.1\tlocalhost\n'
  # ::1 only where the loopback has IPv6 (a server on "localhost" binds it).
  if grep -q '^0\{31\}1 ' /proc/net/if_inet6 2>/dev/null; then
    hosts+='::1\tlocalhost ip6-localhost ip6-loopback\n'
  fi
  printf "$hosts" | $SUDO tee -a /etc/hosts >/dev/null
fi
