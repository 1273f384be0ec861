#!/usr/bin/env bash
# Debian's Chromium, for the operator console's browser tests (tests/e2e/test_console.py).
#
#   deploy/local/chromium.sh {install|path}
#
# install: installs Debian's `chromium` package when no Chromium is there (idempotent; as root,
#          which `make test` and CI are; otherwise it says what to install). Playwright drives
#          this browser through its executable path and never downloads one of its own.
# path:    prints the browser's path (exit 1 when there is none).
#
# WALLET_CHROMIUM may name another Chromium binary; then nothing is installed.
set -euo pipefail

die() {
    echo "chromium.sh: $*" >&2
    exit 1
}

find_chromium() {
    local candidate
    for candidate in "${WALLET_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
        if [[ -n $candidate && -x $candidate ]]; then
            printf '%s' "$candidate"
            return 0
        fi
    done
    return 1
}

install() {
    find_chromium >/dev/null && return 0
    [[ -z ${WALLET_CHROMIUM:-} ]] || die "WALLET_CHROMIUM=$WALLET_CHROMIUM is not an executable"
    [[ $EUID -eq 0 ]] || die "no Chromium and not root: install Debian's 'chromium' package"
    echo "chromium.sh: installing Debian's chromium package" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Try without refreshing the index first (fast, works offline with a warm apt cache).
    if ! apt-get install -y -q chromium >&2; then
        apt-get update -q >&2
        apt-get install -y -q chromium >&2
    fi
    find_chromium >/dev/null || die "chromium installed but not found under /usr/bin"
}

case "${1:-}" in
    install) install ;;
    path) find_chromium || die "no Chromium (run: deploy/local/chromium.sh install)" ;;
    *) die "usage: chromium.sh {install|path}" ;;
esac
