#!/usr/bin/env bash
# Makes the base image `docker/Dockerfile` starts from where no container registry can be
# reached: a minimal Debian bookworm root file system from Debian's own packages
# (debootstrap), imported as an image. Only the Debian mirror is needed, the one apt uses.
#   docker/base-image.sh [IMAGE]          (default mattepipe-base:bookworm; `make base-image`)
#   docker/base-image.sh --pick REGISTRY_BASE LOCAL_BASE
#     prints the base `make images` builds on: $BASE_IMAGE when set, else REGISTRY_BASE where
#     it is here or can be pulled, else LOCAL_BASE (made first when missing).
# DEBIAN_MIRROR picks another mirror. Idempotent: an existing image is kept.
set -euo pipefail
if [ "${1:-}" = --pick ]; then
  registry=${2:?} local=${3:?}
  if [ -n "${BASE_IMAGE:-}" ]; then
    echo "$BASE_IMAGE"
  elif docker image inspect "$registry" >/dev/null 2>&1 || docker pull -q "$registry" >/dev/null 2>&1; then
    echo "$registry"
  else
    echo "no registry gives $registry: building on $local (Debian packages)" >&2
    "$0" "$local" >&2
    echo "$local"
  fi
  exit 0
fi
IMAGE=${1:-mattepipe-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE is there already"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
fi
root=$(mktemp -d /var/tmp/mattepipe-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$root" "$MIRROR"
# the updates and the security archive too, as the images of the usual registries have them
security=${DEBIAN_SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}
cat >"$root/etc/apt/sources.list" <<LIST
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $security $SUITE-security main
LIST
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
  "$root"/tmp/*
tar -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' \
  --message "debootstrap --variant=minbase $SUITE $MIRROR" - "$IMAGE"
echo "made base image $IMAGE"
