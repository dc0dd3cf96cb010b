#!/usr/bin/env bash
# deps.sh - install every Debian package the build, the dev stack and the tests need.
# Idempotent: installs only what is missing, and does nothing when all is there.
set -euo pipefail

PKGS=(
  build-essential pkg-config make git curl ca-certificates procps iproute2
  librdkafka-dev libpq-dev libhiredis-dev libavro-dev libcmocka-dev
  libmicrohttpd-dev libjansson-dev libjwt-dev uuid-dev libcurl4-openssl-dev
  postgresql postgresql-client redis-server redis-tools
  python3 python3-avro python3-yaml
  clang clang-format libclang-rt-14-dev
  # analysis library (lib/analysis): decoding and features
  libsndfile1-dev libaubio-dev libebur128-dev libfftw3-dev
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian postgresql package starts a cluster on 5432; we run our own on other ports.
echo "deps: done" >&2
