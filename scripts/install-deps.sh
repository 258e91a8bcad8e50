#!/usr/bin/env bash
# Installs the Debian packages streamdiff needs, only those missing.
# Runs as root (or through sudo when available). Safe to run repeatedly.
set -euo pipefail
PKGS=(build-essential cmake pkg-config git
      libopenblas-openmp-dev libcjson-dev libutf8proc-dev libpng-dev libjpeg62-turbo-dev
      libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavdevice-dev libwebsockets-dev
      liblo-dev
      clang libclang-rt-14-dev libomp-dev python3)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null && SUDO=sudo || { echo "install-deps: need root to apt-get install: ${missing[*]}" >&2; exit 1; }
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
