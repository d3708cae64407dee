#!/usr/bin/env bash
# A base image for `make image BASE_IMAGE=...` on a machine without Docker Hub: Debian bookworm's
# minimal root file system (debootstrap, from the Debian mirror the machine already uses) with
# Python 3.11, imported into the local Docker daemon. Needs root, debootstrap and a running dockerd.
#
#   docker/base-image.sh [TAG] [MIRROR]      # default tag tavr-base:bookworm
set -euo pipefail
tag=${1:-tavr-base:bookworm}
mirror=${2:-http://deb.debian.org/debian}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# python3-venv: the image installs into /opt/venv (Debian's own Python refuses system-wide pip installs)
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$tag"
docker run --rm --network none "$tag" python3 -c 'import sys, venv; print("base ok:", sys.version.split()[0])'
