#!/usr/bin/env bash
# Proves that a plugin author needs nothing but an installed ckptbridge:
#   1. installs the build (default build/release) into a temporary prefix P;
#   2. copies sdk/examples/wren to a temporary folder outside the source tree
#      and configures it against P only (find_package(ckptbridge_sdk 1));
#   3. builds it and runs its tests (ctest: `ckptbridge plugins check` and the
#      testkit from the author's own test program);
#   4. runs P/bin/ckptbridge plugins check on it, loads it with --plugin-dir,
#      and converts a generated checkpoint HF -> MaxText -> HF, checking the
#      tensors come back unchanged.
#   scripts/out-of-tree-check.sh [build-dir]
# Run after scripts/test.sh (or scripts/build.sh), which leaves build/release.
set -euo pipefail
cd "$(dirname "$0")/.."
src="$(pwd)"
build="${1:-build/release}"
if [ ! -f "$build/CMakeCache.txt" ]; then
  echo "out-of-tree-check: no build in $build; building it first"
  scripts/build.sh release
  build=build/release
fi
jobs="$(nproc)"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/ckptbridge-oot-XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
step() { echo "== out-of-tree-check: $*"; }

step "install $build into $prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in bin/ckptbridge include/ckptbridge/plugin_abi.h include/ckptbridge/sdk/plugin.hpp \
         include/ckptbridge/testkit/conformance.hpp lib/libckptbridge_testkit.so \
         lib/ckptbridge/plugins/libckptbridge_llama.so \
         lib/cmake/ckptbridge_sdk/ckptbridge_sdkConfig.cmake \
         lib/cmake/ckptbridge_sdk/ckptbridge_sdkConfigVersion.cmake; do
  [ -e "$prefix/$f" ] || { echo "out-of-tree-check: $prefix/$f was not installed" >&2; exit 1; }
done
ckb="$prefix/bin/ckptbridge"

step "build sdk/examples/wren from $tmp/wren against $prefix only"
cp -r sdk/examples/wren "$tmp/wren"
# Nothing of the source tree may be visible: no registry, no system package
# paths that could hold another ckptbridge, only the prefix.
(cd "$tmp" && cmake -S wren -B wren-build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF >/dev/null)
if grep -q "$src" "$tmp/wren-build/CMakeCache.txt"; then
  echo "out-of-tree-check: the example's build refers to the source tree $src:" >&2
  grep "$src" "$tmp/wren-build/CMakeCache.txt" >&2
  exit 1
fi
cmake --build "$tmp/wren-build" -j "$jobs" >/dev/null
plugin="$tmp/wren-build/libckptbridge_wren.so"
exports="$(nm -D --defined-only "$plugin" | awk '{print $3}')"
[ "$exports" = "ckptbridge_plugin_entry_v1" ] || {
  echo "out-of-tree-check: $plugin exports more than the entry point: $exports" >&2; exit 1; }

step "ctest in the example's build"
ctest --test-dir "$tmp/wren-build" --output-on-failure

step "ckptbridge plugins check"
"$ckb" plugins check --work-dir "$tmp/check" "$plugin"

step "ckptbridge plugins --plugin-dir"
mkdir -p "$tmp/plugins" && cp "$plugin" "$tmp/plugins/"
"$ckb" plugins --plugin-dir "$tmp/plugins" | tee "$tmp/plugins.txt"
grep -Eq "^wren +0\.1\.0 +1\.[0-9]+ +wren +$tmp/plugins/libckptbridge_wren.so" "$tmp/plugins.txt" || {
  echo "out-of-tree-check: the installed host does not list the wren plugin" >&2; exit 1; }

step "convert a generated checkpoint both ways"
hf="$tmp/check/wren-untied/hf"   # synthesized by plugins check above
"$ckb" convert --plugin-dir "$tmp/plugins" --to maxtext --save-dtype float32 "$hf" "$tmp/mt"
"$ckb" convert --plugin-dir "$tmp/plugins" --to hf --save-dtype bfloat16 "$tmp/mt/0/items" "$tmp/hf-back"
# Same tensor names, dtypes and shapes (the values were compared bit for bit
# by `plugins check` above, through the same installed host).
tensors() { "$ckb" inspect --plugin-dir "$tmp/plugins" "$1" | awk '$2 ~ /^(BF16|F16|F32)$/ {print $1, $2, $3}' | sort; }
tensors "$hf" > "$tmp/before.txt"
tensors "$tmp/hf-back" > "$tmp/after.txt"
[ -s "$tmp/before.txt" ] || { echo "out-of-tree-check: inspect listed no tensors in $hf" >&2; exit 1; }
diff -u "$tmp/before.txt" "$tmp/after.txt"
echo "$(wc -l < "$tmp/after.txt") tensors came back with their names, dtypes and shapes"
step "OK: built, checked, loaded and converted with nothing but the installed SDK"
