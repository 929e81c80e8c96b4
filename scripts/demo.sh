#!/usr/bin/env bash
# The main job on the bundled checkpoint: installs the build dependencies,
# builds, converts a real tiny Llama 3 (tests/data/fixtures/hf/mlxd-tiny_llama3,
# written by the MLX C API) HF -> MaxText -> HF, and checks that every tensor
# came back bit for bit.
#   scripts/demo.sh [HF_FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release

bin=build/release/bin/ckptbridge
src="${1:-tests/data/fixtures/hf/mlxd-tiny_llama3}"
out="$(mktemp -d "${TMPDIR:-/tmp}/ckptbridge-demo.XXXXXX")"
trap 'rm -rf "$out"' EXIT

echo "== plugins"
"$bin" plugins
echo
echo "== HF -> MaxText (scanned, float32 so the way back is lossless)"
"$bin" convert --to maxtext --save-dtype float32 "$src" "$out/maxtext"
echo
"$bin" inspect "$out/maxtext/0/items"
echo
echo "== MaxText -> HF"
"$bin" convert --to hf "$out/maxtext/0/items" "$out/hf"
echo

# Compare name, dtype, shape, bytes and CRC-32C of every tensor (not the file
# column: the shard layout may differ from the source's).
listing() { "$bin" inspect --checksums "$1" | awk '/^NAME/{on=1; next} on && NF {print $1, $2, $3, $4, $6}'; }
if diff <(listing "$src") <(listing "$out/hf") >/dev/null; then
  echo "round trip matched: $(listing "$src" | wc -l) tensors identical, bit for bit"
else
  diff <(listing "$src") <(listing "$out/hf") || true
  echo "round trip MISMATCH" >&2
  exit 1
fi
