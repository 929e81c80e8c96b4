// fuzz/fuzz_zarr_metadata.cc - zarr array metadata (`zarr.json`, `.zarray`)
// through ArrayMetadata::ParseZarr3 and ParseZarr2.
//
// Every input goes to both parsers. Checked on success: the metadata
// re-serializes to text that parses back to the same metadata, chunk keys and
// the chunk grid can be computed, the fill value makes a chunk, and (for
// chunks up to 1 MiB) a chunk of it encodes and decodes back to itself.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "host/base/shape.h"
#include "host/formats/orbax/zarr.h"

namespace {

using ckptbridge::fuzz::CheckRefusal;
using ckptbridge::orbax::ArrayMetadata;
using ckptbridge::orbax::ZarrFormat;

constexpr std::string_view kLabel = "fuzz/zarr.json";
constexpr uint64_t kMaxRoundTripBytes = 1 << 20;
constexpr int64_t kMaxInnerChunks = 4096;

bool SameMetadata(const ArrayMetadata& a, const ArrayMetadata& b) {
  return a.format == b.format && a.dtype == b.dtype && a.shape == b.shape &&
         a.chunk_shape == b.chunk_shape && a.inner_chunk_shape == b.inner_chunk_shape &&
         a.zstd == b.zstd && a.zstd_level == b.zstd_level && a.index_crc32c == b.index_crc32c &&
         a.fill_value == b.fill_value && a.sharded == b.sharded &&
         a.index_at_end == b.index_at_end && a.v3_default_keys == b.v3_default_keys &&
         a.v3_separator == b.v3_separator && a.v2_separator == b.v2_separator;
}

void Exercise(const ArrayMetadata& m) {
  const std::string text = m.ToJson();
  ckptbridge::Result<ArrayMetadata> again = m.format == ZarrFormat::kV3
                                                ? ArrayMetadata::ParseZarr3(text, kLabel)
                                                : ArrayMetadata::ParseZarr2(text, kLabel);
  if (!again.ok()) {
    std::fprintf(stderr, "re-serialized metadata does not parse: %s\n%s\n",
                 again.status().message().c_str(), text.c_str());
    std::abort();
  }
  FUZZ_CHECK(SameMetadata(m, *again));

  const std::vector<int64_t> grid = m.ChunkGrid();
  FUZZ_CHECK(grid.size() == m.shape.size());
  std::vector<int64_t> last(grid.size());
  for (size_t i = 0; i < grid.size(); ++i) {
    FUZZ_CHECK(grid[i] >= 0);
    last[i] = grid[i] > 0 ? grid[i] - 1 : 0;
  }
  FUZZ_CHECK(!m.ChunkKey(last).empty());

  const uint64_t chunk_bytes = m.ChunkBytes();
  if (chunk_bytes > kMaxRoundTripBytes) return;
  int64_t inner_chunks = 1;
  for (size_t i = 0; i < m.chunk_shape.size(); ++i) {
    inner_chunks *= m.chunk_shape[i] / m.inner_chunk_shape[i];
    if (inner_chunks > kMaxInnerChunks) return;
  }
  ckptbridge::Result<std::string> fill = ckptbridge::orbax::FillValueChunk(m, kLabel);
  FUZZ_CHECK(fill.ok());  // the parser validated the fill value
  FUZZ_CHECK(fill->size() == chunk_bytes);
  ckptbridge::Result<std::string> encoded = ckptbridge::orbax::EncodeChunk(m, *fill);
  FUZZ_CHECK(encoded.ok());
  ckptbridge::Result<std::string> decoded = ckptbridge::orbax::DecodeChunk(m, *encoded, kLabel);
  FUZZ_CHECK(decoded.ok());
  FUZZ_CHECK(*decoded == *fill);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (bool v3 : {true, false}) {
    ckptbridge::Result<ArrayMetadata> m =
        v3 ? ArrayMetadata::ParseZarr3(text, kLabel) : ArrayMetadata::ParseZarr2(text, kLabel);
    if (!m.ok()) {
      CheckRefusal(m.status(), kLabel);
      continue;
    }
    FUZZ_CHECK(m->format == (v3 ? ZarrFormat::kV3 : ZarrFormat::kV2));
    Exercise(*m);
  }
  return 0;
}
