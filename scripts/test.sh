#!/usr/bin/env bash
# Installs the build dependencies, builds, and runs every test (CTest).
#   scripts/test.sh [release|asan]
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
scripts/install-deps.sh
scripts/build.sh "$preset"
ctest --preset "$preset" -j "$(nproc)"
