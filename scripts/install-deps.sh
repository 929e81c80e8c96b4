#!/usr/bin/env bash
# Installs the Debian 12 packages ckptbridge builds with. Idempotent; uses sudo
# when not run as root.
set -euo pipefail

packages=(
  cmake g++ make
  libboost-dev libboost-program-options-dev libboost-filesystem-dev
  nlohmann-json3-dev libzstd-dev libtbb-dev libgtest-dev libgmock-dev libbenchmark-dev
  libxxhash-dev pkg-config
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all build dependencies are installed"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${packages[@]}"
