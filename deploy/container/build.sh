#!/usr/bin/env bash
# Builds the service image on a machine that reaches Debian's mirror and PyPI but no container
# registry (docs/deployment.md, "Building it on this machine"). Run as root, from anywhere:
#
#   bash deploy/container/build.sh            # base image (once), then the service image
#
# 1. The base image, made once and reused while it exists: Debian bookworm (minbase) from the
#    Debian mirror this machine's apt uses, debootstrapped into a `buildah from scratch`
#    container, with Debian's Python 3.11 and a virtualenv at /opt/venv first on PATH (so `python`
#    and `pip` mean what they mean in the public python image). Committed as $BASE_IMAGE.
# 2. The service image, built from deploy/container/Containerfile with BASE_IMAGE pointing at
#    that base, with cached layers (a code change rebuilds only the project wheel and the
#    runtime install; the dependency wheels are cached until pyproject.toml changes).
#
# Isolation is `chroot` because no OCI runtime (crun, runc) is installed here; chroot isolation
# shares the host's network, which is how pip reaches PyPI inside the build.
#
# Settings (environment): BASE_IMAGE, IMAGE, DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR,
# HOST_CA_BUNDLE (default: $PIP_CERT, else Debian's bundle).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BASE_IMAGE=${BASE_IMAGE:-localhost/wallet-base:bookworm}
IMAGE=${IMAGE:-localhost/quadcode-wallet:dev}
export BUILDAH_ISOLATION=chroot

# The mirrors apt already uses on this machine (deb822 sources first, then the one-line format):
# they are the ones known to be reachable.
apt_uri() {  # $1: a regular expression the URI must match
    cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | grep -oE "https?://[^ ]*" | grep -E "$1" | head -n 1 || true
}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-$(apt_uri '/debian/?$')}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-$(apt_uri '/debian-security/?$')}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

log() { printf '%s build.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    echo "build.sh: run as root (buildah mount and debootstrap need it)" >&2
    exit 2
fi
for tool in buildah debootstrap; do
    if ! command -v "$tool" >/dev/null; then
        echo "build.sh: $tool is missing: apt-get install -y $tool" >&2
        exit 2
    fi
done

build_base() {
    local ctr mnt
    ctr=$(buildah from scratch)
    # A failed attempt leaves nothing behind: the next run starts again from scratch.
    trap 'buildah umount "$ctr" >/dev/null 2>&1 || true; buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
    mnt=$(buildah mount "$ctr")
    log "debootstrap bookworm (minbase) from $DEBIAN_MIRROR into $mnt"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$mnt" "$DEBIAN_MIRROR"
    # Security and point-release updates, then nothing of apt's state stays in the image.
    cat >"$mnt/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb $DEBIAN_SECURITY_MIRROR bookworm-security main
EOF
    log "apt-get upgrade from bookworm-updates and bookworm-security"
    buildah run "$ctr" -- sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get -y -qq upgrade && apt-get clean && rm -rf /var/lib/apt/lists/*'
    buildah run "$ctr" -- python3 -m venv /opt/venv
    buildah config \
        --env PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 \
        --cmd python \
        --label org.opencontainers.image.description="Debian bookworm minbase, Python 3.11, venv /opt/venv" \
        "$ctr"
    buildah umount "$ctr" >/dev/null
    buildah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
    trap - EXIT
}

if buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image $BASE_IMAGE present: reused"
else
    started=$SECONDS
    build_base
    log "base image $BASE_IMAGE built in $((SECONDS - started)) s"
fi

# pip inside the build trusts what the host trusts: this machine reaches PyPI through a proxy
# whose certificate authority is only in the host's store. The host's bundle and a pip.conf
# naming it are mounted for the RUN steps only (build-time volumes are not committed), so the
# image keeps Debian's own trust store and bakes no host file in.
HOST_CA_BUNDLE=${HOST_CA_BUNDLE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}
pip_conf=$(mktemp)
trap 'rm -f "$pip_conf"' EXIT
printf '[global]\ncert = /run/wallet-build/ca-bundle.crt\n' >"$pip_conf"
chmod 644 "$pip_conf"

started=$SECONDS
previous=$(buildah inspect --type image --format '{{.FromImageID}}' "$IMAGE" 2>/dev/null || true)
log "building $IMAGE from $BASE_IMAGE"
# --format docker keeps the Containerfile's HEALTHCHECK (the OCI image format has no field for
# it); --pull=never: the base is local and there is no registry to ask.
# --force-rm: a failed step leaves no working container behind.
buildah build --layers --force-rm --pull=never --format docker --network host \
    --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --volume "$HOST_CA_BUNDLE:/run/wallet-build/ca-bundle.crt:ro" \
    --volume "$pip_conf:/etc/pip.conf:ro" \
    -f "$ROOT/deploy/container/Containerfile" -t "$IMAGE" "$ROOT"
log "image $IMAGE built in $((SECONDS - started)) s"
# The image this build replaced would stay as an untagged copy of about 150 MB per code change;
# a working container still using it keeps it (rmi refuses), which is fine.
current=$(buildah inspect --type image --format '{{.FromImageID}}' "$IMAGE")
if [[ -n $previous && $previous != "$current" ]]; then
    buildah rmi "$previous" >/dev/null 2>&1 || true
fi
