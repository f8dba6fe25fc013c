#!/usr/bin/env bash
# Build a Debian bookworm base image locally (no registry needed): debootstrap a
# minimal root file system and import it. Skipped when the image already exists.
#   usage: images/build-base.sh [IMAGE]   (default jupyter-spark-appliance-base:bookworm)
set -euo pipefail
IMAGE="${1:-jupyter-spark-appliance-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE exists"
    exit 0
fi
command -v debootstrap >/dev/null 2>&1 || { echo "debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }
ROOTFS="$(mktemp -d /tmp/jsa-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >/dev/null
tar -C "$ROOTFS" -c . | docker import - "$IMAGE" >/dev/null
echo "built $IMAGE"
