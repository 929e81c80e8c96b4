// fuzz/fuzz_zarr_shard.cc - stored chunk values (zarr3 shards with their
// index and CRC-32C, plain zstd frames) through orbax::DecodeChunk.
//
// The first byte picks one of a few array layouts (the fixtures' and the
// variants other zarr v3 writers produce: several inner chunks, index at the
// start, no CRC, no compression, zarr v2); the rest is the stored value.
// Checked: a decoded chunk has exactly ChunkBytes() bytes, refusals are
// DataLoss-style bad-input errors naming the value.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "host/formats/orbax/zarr.h"

namespace {

using ckptbridge::DType;
using ckptbridge::orbax::ArrayMetadata;

std::vector<ArrayMetadata> Layouts() {
  std::vector<ArrayMetadata> layouts;
  // Orbax today: one inner chunk per shard (the v1 fixture's int32 a[8]).
  layouts.push_back(ArrayMetadata::ForWrite(DType::kI32, {8}, {8}));
  // Older Orbax: several inner chunks per shard.
  ArrayMetadata several = ArrayMetadata::ForWrite(DType::kBF16, {4, 6}, {4, 6});
  several.inner_chunk_shape = {2, 3};
  layouts.push_back(several);
  // Index first, no CRC, no compression, a non-zero fill value.
  ArrayMetadata start = several;
  start.index_at_end = false;
  start.index_crc32c = false;
  start.zstd = false;
  start.fill_value = 1.5;
  layouts.push_back(start);
  // Unsharded zarr v3 and zarr v2 (a bare zstd frame), and v2 raw bytes.
  ArrayMetadata unsharded = ArrayMetadata::ForWrite(DType::kF32, {2, 4}, {1, 2});
  unsharded.sharded = false;
  unsharded.index_crc32c = false;
  layouts.push_back(unsharded);
  layouts.push_back(ArrayMetadata::ForWriteZarr2(DType::kI32, {8}, {8}));  // v0 fixture a[8]
  layouts.push_back(ArrayMetadata::ForWriteZarr2(DType::kI64, {8}, {8}));  // legacy a[8]
  ArrayMetadata raw = ArrayMetadata::ForWriteZarr2(DType::kU8, {16}, {16});
  raw.zstd = false;
  layouts.push_back(raw);
  return layouts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<ArrayMetadata> layouts = Layouts();
  if (size < 1) return 0;
  const ArrayMetadata& m = layouts[data[0] % layouts.size()];
  const std::string_view value(reinterpret_cast<const char*>(data) + 1, size - 1);
  constexpr std::string_view kLabel = "fuzz/a/c/0";
  ckptbridge::Result<std::string> chunk = ckptbridge::orbax::DecodeChunk(m, value, kLabel);
  if (!chunk.ok()) {
    ckptbridge::fuzz::CheckRefusal(chunk.status(), kLabel);
    return 0;
  }
  FUZZ_CHECK(chunk->size() == m.ChunkBytes());
  return 0;
}
