// host/formats/orbax/zarr.h - zarr array metadata and chunk encoding, as
// TensorStore writes them for Orbax.
//
// zarr v3 (`zarr.json`, what MaxText writes): a regular chunk grid and a
// single `sharding_indexed` codec. Each stored value (a "shard") holds the
// inner chunks of one grid cell, each a zstd frame of the chunk's C-order,
// little-endian bytes, followed by an index of (offset, nbytes) uint64-LE
// pairs - (2^64-1, 2^64-1) for a missing inner chunk - and the CRC-32C of
// the index. Current Orbax uses inner chunk == outer chunk (one inner chunk
// per shard); older Orbax wrote several; both are read.
//
// zarr v2 (`.zarray`): one zstd frame (level 1) per chunk, keys `0.1`
// (`0` for rank 0).
//
// Exact formats: shared/docs/orbax-format.md §3.
#ifndef CKPTBRIDGE_HOST_FORMATS_ORBAX_ZARR_H_
#define CKPTBRIDGE_HOST_FORMATS_ORBAX_ZARR_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "host/base/dtype.h"
#include "host/base/memory_budget.h"
#include "host/base/shape.h"
#include "host/base/status.h"

namespace ckptbridge::orbax {

enum class ZarrFormat { kV2 = 2, kV3 = 3 };

struct ArrayMetadata {
  ZarrFormat format = ZarrFormat::kV3;
  DType dtype = DType::kInvalid;
  Shape shape;
  Shape chunk_shape;         // the chunk grid (v3: the shard shape)
  Shape inner_chunk_shape;   // v3 sharding codec's inner chunks; v2: == chunk_shape
  bool zstd = true;          // chunks (inner chunks) are zstd frames
  int zstd_level = 3;        // as recorded (v3 default 3, v2 default 1)
  bool index_crc32c = true;  // v3: the shard index is followed by a CRC-32C
  nlohmann::json fill_value = 0;
  char v2_separator = '.';  // v2 `dimension_separator`

  // v3 variants that Orbax does not write but other zarr v3 writers may;
  // ParseZarr3 reads them, ToZarr3Json writes them back, the codecs follow.
  bool sharded = true;          // false: plain `bytes` [+ `zstd`] codecs, no shard index
  bool index_at_end = true;     // `sharding_indexed` index_location "end" (else "start")
  bool v3_default_keys = true;  // chunk_key_encoding "default" ("c/0/1"); false: "v2" ("0/1")
  char v3_separator = '/';      // the chunk_key_encoding separator

  // The metadata Orbax/TensorStore writes for a new array: zarr v3, one inner
  // chunk per shard, zstd level 3, CRC-32C index, fill value 0.
  static ArrayMetadata ForWrite(DType dtype, Shape shape, Shape chunk_shape);
  // The same for zarr v2 (Orbax's use_zarr3=False): zstd level 1, fill
  // value null, C order, no filters, "." separator.
  static ArrayMetadata ForWriteZarr2(DType dtype, Shape shape, Shape chunk_shape);

  // Parses `zarr.json` / `.zarray` text. `label` starts every error message.
  // Refuses what it cannot decode (other codecs, big-endian, 'F' order,
  // filters) with a message naming the field.
  static Result<ArrayMetadata> ParseZarr3(std::string_view json_text, std::string_view label);
  static Result<ArrayMetadata> ParseZarr2(std::string_view json_text, std::string_view label);

  // The `zarr.json` text, byte for byte as TensorStore writes it (compact,
  // keys sorted).
  std::string ToZarr3Json() const;
  // The `.zarray` text, byte for byte as TensorStore writes it, e.g.
  // {"chunks":[8],"compressor":{"id":"zstd","level":1},"dimension_separator":".",
  //  "dtype":"<i4","fill_value":null,"filters":null,"order":"C","shape":[8],
  //  "zarr_format":2}
  std::string ToZarr2Json() const;
  // ToZarr3Json() or ToZarr2Json(), by `format`: the text stored at MetadataKey().
  std::string ToJson() const;

  // "zarr.json" or ".zarray".
  std::string_view MetadataKey() const;
  // The key of chunk `index` relative to the array: "c/0/1" (v3; "c" for
  // rank 0) or "0.1" (v2; "0" for rank 0).
  std::string ChunkKey(const std::vector<int64_t>& index) const;
  // Number of chunks along each dimension (ceil(shape / chunk_shape)).
  std::vector<int64_t> ChunkGrid() const;
  // Bytes of one full (outer) chunk.
  uint64_t ChunkBytes() const;
};

// Encodes one full chunk (ChunkBytes() bytes, C order) into the value to store.
// zstd frames are TensorStore's: v3 frames record their content size, v2
// frames do not (both byte-identical to TensorStore's with libzstd 1.5).
Result<std::string> EncodeChunk(const ArrayMetadata& metadata, std::string_view chunk_bytes);
// The same into `out` (its old contents are dropped), a buffer reused from
// one chunk to the next (base/memory_budget.h).
Status EncodeChunk(const ArrayMetadata& metadata, std::string_view chunk_bytes, ScratchBuffer& out);

// Decodes a stored value into the chunk's ChunkBytes() bytes. Missing inner
// chunks are filled with the fill value. Corruption (bad CRC, truncated index,
// offsets out of range, a zstd frame that does not decode to the expected
// size) is DataLoss naming `label`.
Result<std::string> DecodeChunk(const ArrayMetadata& metadata, std::string_view value,
                                std::string_view label);
// The same into the ChunkBytes() bytes at `out`.
Status DecodeChunk(const ArrayMetadata& metadata, std::string_view value, std::string_view label,
                   char* out);

// A whole chunk (ChunkBytes() bytes) of the fill value: what a chunk that was
// never written reads as. Errors only for a fill value ParseZarr* would refuse.
Result<std::string> FillValueChunk(const ArrayMetadata& metadata, std::string_view label);

// Parses an Orbax/zarr metadata document (host/base/json.h bounds and all).
// Errors are InvalidArgument "<label>: invalid JSON at byte N", "... invalid
// JSON: nested deeper than 64 levels" or "... invalid JSON: <why>".
Result<nlohmann::json> ParseMetadataJson(std::string_view text, std::string_view label);

}  // namespace ckptbridge::orbax

#endif  // CKPTBRIDGE_HOST_FORMATS_ORBAX_ZARR_H_
