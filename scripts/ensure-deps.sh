#!/usr/bin/env bash
# Installs what erlang_python needs on Debian 12 (as root), or prints the
# exact apt-get line and fails.  Fast when everything is present.
set -euo pipefail
PKGS="gcc make erlang-nox erlang-dev rebar3 erlang-common-test erlang-dialyzer erlang-eunit
      erlang-tools erlang-proper erlang-proper-dev python3-dev python3-numpy python3-venv
      elixir"
EXTRA="${1:-}"   # more packages for a given target (valgrind, cppcheck...)
missing=""
for p in $PKGS $EXTRA; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "erlang_python: missing Debian packages:$missing"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends $missing
else
  echo "Run as root:  apt-get update && apt-get install -y$missing"
  exit 1
fi
