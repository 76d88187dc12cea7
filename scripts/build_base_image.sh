#!/usr/bin/env bash
# Build a local stand-in for docker.io/library/python:3.11-slim from Debian bookworm.
#
# BentoML's generated Dockerfile starts FROM python:3.11-slim. Where Docker Hub
# cannot be reached (an air-gapped build host, or these CI machines), this
# script builds an image of that name from Debian packages, so that
# `bentoml containerize --backend buildah` finds it locally and pulls nothing.
#
#   sudo scripts/build_base_image.sh            # once per build host; FORCE=1 rebuilds
#
# Needs root, buildah, podman (for `podman import`) and debootstrap; installs
# them with apt-get when they are missing. MIRROR defaults to the Debian
# mirror in this host's apt sources. Takes about a minute.
set -euo pipefail

IMAGE=${IMAGE:-docker.io/library/python:3.11-slim}
SUITE=${SUITE:-bookworm}

log() { printf '[base-image] %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  log "must run as root (debootstrap and chroot)"
  exit 1
fi

missing=()
for tool in buildah podman debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman debootstrap >/dev/null
fi

if [ "${FORCE:-0}" != 1 ] && buildah inspect --type image "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE already exists (FORCE=1 rebuilds it)"
  exit 0
fi

if [ -z "${MIRROR:-}" ]; then
  MIRROR=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
  [ -n "$MIRROR" ] || MIRROR=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | head -n1 || true)
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

ROOTFS=$(mktemp -d /tmp/recsys-base-rootfs.XXXXXX)
cleanup() {
  for mount in proc sys dev; do umount "$ROOTFS/$mount" 2>/dev/null || true; done
  rm -rf "$ROOTFS"
}
trap cleanup EXIT

log "debootstrap $SUITE from $MIRROR"
debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >/dev/null

# Proxies that re-sign TLS put their CA in /usr/local/share/ca-certificates:
# without it every pip/uv download in the image build fails certificate checks.
mkdir -p "$ROOTFS/usr/local/share/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/" 2>/dev/null || true
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
cp /etc/apt/apt.conf.d/99* "$ROOTFS/etc/apt/apt.conf.d/" 2>/dev/null || true

log "installing python3.11 in the image"
mount -t proc proc "$ROOTFS/proc"
chroot "$ROOTFS" /bin/sh -c '
  set -e
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3.11 python3-pip python3-venv ca-certificates >/dev/null
  update-ca-certificates >/dev/null
  ln -sf /usr/bin/python3 /usr/local/bin/python
  ln -sf /usr/bin/python3 /usr/local/bin/python3
  apt-get clean
  rm -rf /var/lib/apt/lists/*
'
umount "$ROOTFS/proc"
: > "$ROOTFS/etc/resolv.conf"

log "importing as $IMAGE"
tar -C "$ROOTFS" -c . | podman import \
  --change "ENV PIP_BREAK_SYSTEM_PACKAGES=1" \
  --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
  --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" \
  --change "ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt" \
  --change "ENV UV_NATIVE_TLS=1" \
  --change "ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
  - "$IMAGE" >/dev/null
log "done: $(buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$IMAGE" | head -n1)"
