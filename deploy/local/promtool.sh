#!/usr/bin/env bash
# Prometheus's promtool, for the alert rules' tests (tests/unit/test_observability.py): installs
# Debian's `prometheus` package when promtool is missing (idempotent; as root, which `make test`
# and CI are; otherwise it says what to install). Only promtool is used: no Prometheus server is
# started by the tests.
#
#   deploy/local/promtool.sh install
set -euo pipefail

[[ ${1:-} == install ]] || { echo "usage: promtool.sh install" >&2; exit 1; }
command -v promtool >/dev/null && exit 0
[[ $EUID -eq 0 ]] || { echo "promtool.sh: no promtool and not root: install Debian's 'prometheus' package" >&2; exit 1; }
echo "promtool.sh: installing Debian's prometheus package (for promtool)" >&2
export DEBIAN_FRONTEND=noninteractive
# Try without refreshing the index first (fast, works offline with a warm apt cache).
if ! apt-get install -y -q --no-install-recommends prometheus >&2; then
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends prometheus >&2
fi
command -v promtool >/dev/null || { echo "promtool.sh: prometheus installed but promtool not found" >&2; exit 1; }
