#!/usr/bin/env bash
# fuzz/run.sh - build the libFuzzer targets with clang (ASan + UBSan) and run
# each for a bounded time; exits non-zero if any target finds a crash, a leak,
# a timeout or an out-of-memory input.
#
# usage: fuzz/run.sh [TARGET...]          (default: every target)
#
# Environment:
#   FUZZ_SECONDS     seconds per target (default 60)
#   FUZZ_BUILD_DIR   build directory (default build/fuzz-clang)
#   FUZZ_WORK_DIR    corpora, crash files and logs (default $FUZZ_BUILD_DIR/work)
#   FUZZ_JOBS        parallel compile jobs (default 2)
#   FUZZ_RSS_MB      memory limit per target, MB (default 2048)
#   FUZZ_NO_INSTALL  set to 1 to never run apt-get (fail if clang is missing)
#   FUZZ_SEED        libFuzzer's -seed (CI fixes it so that a run can be
#                    repeated; unset: a random seed per run)
#
# On a crash the reproducer is left as $FUZZ_WORK_DIR/<target>/crash-* and
# the log as $FUZZ_WORK_DIR/<target>.log; rerun it with
#   $FUZZ_BUILD_DIR/fuzz/<target> <crash file>
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
BUILD_DIR=${FUZZ_BUILD_DIR:-$ROOT/build/fuzz-clang}
WORK_DIR=${FUZZ_WORK_DIR:-$BUILD_DIR/work}
JOBS=${FUZZ_JOBS:-2}
RSS_MB=${FUZZ_RSS_MB:-2048}
ALL_TARGETS=(fuzz_safetensors_header fuzz_safetensors_index fuzz_config_json fuzz_zarr_metadata
             fuzz_zarr_shard fuzz_ocdbt_manifest fuzz_ocdbt_node fuzz_orbax_metadata)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL_TARGETS[@]}")

# clang 14 and its libFuzzer runtime (Debian 12: clang, libclang-rt-14-dev),
# plus python3 and zstd for the seed script. The project's own dependencies
# come from scripts/install-deps.sh.
have_libfuzzer() {
  command -v clang++ >/dev/null 2>&1 || return 1
  local lib
  lib="$(clang++ -print-resource-dir)/lib/linux/libclang_rt.fuzzer-$(uname -m).a"
  [ -f "$lib" ]
}
if ! have_libfuzzer || ! command -v python3 >/dev/null || ! command -v zstd >/dev/null; then
  if [ "${FUZZ_NO_INSTALL:-0}" = 1 ]; then
    echo "fuzz/run.sh: clang++ with libFuzzer, python3 and zstd are needed" >&2
    exit 2
  fi
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    clang libclang-rt-14-dev python3 zstd
fi

# The whole tree is instrumented for coverage (-fsanitize=fuzzer-no-link) and
# built with ASan + UBSan (CKPTBRIDGE_SANITIZE); -O1 without NDEBUG keeps
# asserts on. Tests and benchmarks are not needed here.
cmake -S "$ROOT" -B "$BUILD_DIR" \
  -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link" \
  -DCKPTBRIDGE_SANITIZE=ON \
  -DCKPTBRIDGE_BUILD_FUZZ=ON \
  -DCKPTBRIDGE_BUILD_TESTS=OFF \
  -DCKPTBRIDGE_BUILD_BENCH=OFF >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]}"

python3 "$ROOT/fuzz/make_seeds.py" "$WORK_DIR/seeds"

# Leaks are reported (detect_leaks); a second error after the first is not.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

failed=()
for target in "${TARGETS[@]}"; do
  corpus="$WORK_DIR/corpus/$target"
  artifacts="$WORK_DIR/$target"
  mkdir -p "$corpus" "$artifacts"
  args=(-max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb="$RSS_MB" -timeout=20
        -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts/")
  [ -f "$WORK_DIR/seeds/$target.dict" ] && args+=(-dict="$WORK_DIR/seeds/$target.dict")
  [ -n "${FUZZ_SEED:-}" ] && args+=(-seed="$FUZZ_SEED")
  echo "== $target: ${SECONDS_PER_TARGET}s"
  # New inputs go to the first corpus folder, which persists between runs.
  if "$BUILD_DIR/fuzz/$target" "${args[@]}" "$corpus" "$WORK_DIR/seeds/$target" \
      >"$WORK_DIR/$target.log" 2>&1; then
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$WORK_DIR/$target.log" || true
  else
    echo "!! $target failed; log: $WORK_DIR/$target.log" >&2
    grep -E "^==[0-9]+==ERROR|runtime error|FUZZ_CHECK|Test unit written" \
      "$WORK_DIR/$target.log" | head -5 >&2 || true
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzzing found problems in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzzing: no crashes in ${#TARGETS[@]} target(s), ${SECONDS_PER_TARGET}s each"
