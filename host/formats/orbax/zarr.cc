#include "host/formats/orbax/zarr.h"

#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <utility>

#include "host/base/box.h"
#include "host/base/checksum.h"
#include "host/base/json.h"
#include "host/base/numeric.h"

namespace ckptbridge::orbax {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMissing = ~uint64_t{0};  // an absent inner chunk's offset and nbytes
constexpr int kMinZstdLevel = -131072;       // TensorStore's accepted range
constexpr int kMaxZstdLevel = 22;

std::string Quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// ---------------------------------------------------------------------------
// Little-endian helpers.

void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string Hex32(uint32_t v) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s = "0x";
  for (int i = 7; i >= 0; --i) s += kHex[(v >> (4 * i)) & 15];
  return s;
}

// ---------------------------------------------------------------------------
// zstd with one reusable context per thread (creating one costs ~100 KB of
// allocations, and chunks are decoded from many threads).

struct ZstdContexts {
  struct Free {
    void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
    void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
  };
  std::unique_ptr<ZSTD_CCtx, Free> cctx{ZSTD_createCCtx()};
  std::unique_ptr<ZSTD_DCtx, Free> dctx{ZSTD_createDCtx()};
};

ZstdContexts& Contexts() {
  static thread_local ZstdContexts contexts;
  return contexts;
}

// Compresses `input` into the `capacity` bytes at `out` (at least
// ZSTD_compressBound), returning the frame's size. `record_size`: whether
// the frame header records the content size.
Result<size_t> ZstdCompressInto(std::string_view input, int level, char* out, size_t capacity,
                                bool record_size) {
  ZSTD_CCtx* cctx = Contexts().cctx.get();
  size_t n;
  if (record_size) {
    // ZSTD_compressCCtx records the content size in the frame header, as
    // TensorStore's zarr3 zstd codec does.
    n = ZSTD_compressCCtx(cctx, out, capacity, input.data(), input.size(), level);
  } else {
    // TensorStore's zarr v2 zstd compressor writes frames without it.
    ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0);
    n = ZSTD_compress2(cctx, out, capacity, input.data(), input.size());
    ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
  }
  if (ZSTD_isError(n)) {
    return Internal(std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
  }
  return n;
}

// Decodes the zstd frame `frame` into exactly `expected` bytes at `out`.
// TensorStore's zarr v2 frames do not record their content size; a
// single-pass decode into a buffer of the known size handles both kinds.
Status ZstdDecompressInto(std::string_view frame, char* out, size_t expected,
                          std::string_view what) {
  const unsigned long long content = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (content == ZSTD_CONTENTSIZE_ERROR) {
    return DataLoss(std::string(what) + ": not a zstd frame");
  }
  if (content != ZSTD_CONTENTSIZE_UNKNOWN && content != expected) {
    return DataLoss(std::string(what) + ": zstd frame holds " + std::to_string(content) +
                    " bytes, expected " + std::to_string(expected));
  }
  const size_t n =
      ZSTD_decompressDCtx(Contexts().dctx.get(), out, expected, frame.data(), frame.size());
  if (ZSTD_isError(n)) {
    if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall) {
      return DataLoss(std::string(what) + ": zstd frame decodes to more than the expected " +
                      std::to_string(expected) + " bytes");
    }
    return DataLoss(std::string(what) + ": corrupt zstd frame (" + ZSTD_getErrorName(n) + ")");
  }
  if (n != expected) {
    return DataLoss(std::string(what) + ": zstd frame decodes to " + std::to_string(n) +
                    " bytes, expected " + std::to_string(expected));
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Fill values.

std::string LittleEndianBytes(uint64_t bits, size_t size) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i) out[i] = static_cast<char>((bits >> (8 * i)) & 0xff);
  return out;
}

bool IsUnsigned(DType dtype) {
  return dtype == DType::kU8 || dtype == DType::kU16 || dtype == DType::kU32 ||
         dtype == DType::kU64;
}

// One element of `dtype` holding the floating-point value `v`.
Result<std::string> FloatElement(DType dtype, double v, const json& fill, std::string_view label) {
  std::string out(DTypeSize(dtype), '\0');
  switch (dtype) {
    case DType::kF64:
      std::memcpy(out.data(), &v, 8);
      return out;
    case DType::kF32:
    case DType::kBF16:
    case DType::kF16: {
      const float f = static_cast<float>(v);
      CKB_RETURN_IF_ERROR(FromF32(dtype, &f, out.data(), 1));
      return out;
    }
    default:
      // No rounding to the 8-bit float formats here; zero is all we expect.
      if (v == 0 && !std::signbit(v)) return out;
      return Unsupported(std::string(label) + ": fill_value " + fill.dump() + " for " +
                         std::string(ZarrName(dtype)) +
                         " is not supported (only 0 or a hex bit pattern)");
  }
}

// The bytes of one element holding the fill value (zeros for null, as
// TensorStore reads a zarr v2 array without a fill value).
Result<std::string> FillElement(const ArrayMetadata& m, std::string_view label) {
  const json& fill = m.fill_value;
  const size_t size = DTypeSize(m.dtype);
  const std::string dtype_name(ZarrName(m.dtype));
  auto bad = [&]() {
    return InvalidArgument(std::string(label) + ": fill_value " + fill.dump() + " is not a " +
                           dtype_name + " value");
  };
  if (fill.is_null()) return std::string(size, '\0');
  if (fill.is_boolean()) return LittleEndianBytes(fill.get<bool>() ? 1 : 0, size);
  if (fill.is_string()) {
    const std::string s = fill.get<std::string>();
    if (s.size() > 2 && s[0] == '0' && s[1] == 'x') {
      // A raw bit pattern, as zarr v3 writes non-finite values other than
      // the canonical NaN.
      if (s.size() != 2 + 2 * size) return bad();
      uint64_t bits = 0;
      for (size_t i = 2; i < s.size(); ++i) {
        const char c = s[i];
        int digit;
        if (c >= '0' && c <= '9') {
          digit = c - '0';
        } else if (c >= 'a' && c <= 'f') {
          digit = c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
          digit = c - 'A' + 10;
        } else {
          return bad();
        }
        bits = (bits << 4) | static_cast<uint64_t>(digit);
      }
      return LittleEndianBytes(bits, size);
    }
    if (!IsFloating(m.dtype)) return bad();
    if (s == "NaN")
      return FloatElement(m.dtype, std::numeric_limits<double>::quiet_NaN(), fill, label);
    if (s == "Infinity") return FloatElement(m.dtype, HUGE_VAL, fill, label);
    if (s == "-Infinity") return FloatElement(m.dtype, -HUGE_VAL, fill, label);
    return bad();
  }
  if (!fill.is_number()) return bad();
  if (IsFloating(m.dtype)) return FloatElement(m.dtype, fill.get<double>(), fill, label);
  // Integer and bool types: the value must be a whole number that fits.
  const double as_double = fill.get<double>();
  if (fill.is_number_float() && std::trunc(as_double) != as_double) return bad();
  if (m.dtype == DType::kBool) {
    if (as_double != 0 && as_double != 1) return bad();
    return LittleEndianBytes(as_double == 1 ? 1 : 0, 1);
  }
  const int bits = static_cast<int>(8 * size);
  if (IsUnsigned(m.dtype)) {
    if (fill.is_number_integer() && !fill.is_number_unsigned() && fill.get<int64_t>() < 0) {
      return bad();
    }
    if (fill.is_number_float() && (as_double < 0 || as_double >= 18446744073709551616.0)) {
      return bad();
    }
    const uint64_t v =
        fill.is_number_float() ? static_cast<uint64_t>(as_double) : fill.get<uint64_t>();
    if (bits < 64 && v >> bits != 0) return bad();
    return LittleEndianBytes(v, size);
  }
  if (fill.is_number_unsigned() && fill.get<uint64_t>() > uint64_t{INT64_MAX}) return bad();
  if (fill.is_number_float() &&
      (as_double < -9223372036854775808.0 || as_double >= 9223372036854775808.0)) {
    return bad();
  }
  const int64_t v = fill.is_number_float() ? static_cast<int64_t>(as_double) : fill.get<int64_t>();
  if (bits < 64) {
    const int64_t limit = int64_t{1} << (bits - 1);
    if (v < -limit || v >= limit) return bad();
  }
  return LittleEndianBytes(static_cast<uint64_t>(v), size);
}

// `bytes` bytes of repeated fill elements (zeros when the fill value is zero).
Result<std::string> FillChunk(const ArrayMetadata& m, size_t bytes, std::string_view label) {
  CKB_ASSIGN_OR_RETURN(std::string element, FillElement(m, label));
  std::string out(bytes, '\0');
  if (std::all_of(element.begin(), element.end(), [](char c) { return c == 0; })) return out;
  for (size_t i = 0; i + element.size() <= bytes; i += element.size()) {
    std::memcpy(out.data() + i, element.data(), element.size());
  }
  return out;
}

// ---------------------------------------------------------------------------
// JSON parsing helpers. `label` prefixes every message.

const json* Member(const json& object, std::string_view name) {
  auto it = object.find(name);
  return it == object.end() ? nullptr : &*it;
}

Result<const json*> Required(const json& object, std::string_view name, std::string_view label,
                             std::string_view where = "") {
  const json* value = Member(object, name);
  if (!value) {
    return InvalidArgument(std::string(label) + ": missing " + std::string(where) +
                           std::string(name));
  }
  return value;
}

// A shape: an array of non-negative integers (positive when `positive`).
Result<Shape> ParseShape(const json& value, std::string_view field, std::string_view label,
                         bool positive) {
  if (!value.is_array()) {
    return InvalidArgument(std::string(label) + ": " + std::string(field) +
                           " is not an array of integers");
  }
  Shape shape;
  for (const json& d : value) {
    if (!d.is_number_integer() || d.get<int64_t>() < (positive ? 1 : 0)) {
      return InvalidArgument(std::string(label) + ": " + std::string(field) + " " + value.dump() +
                             " must hold " + (positive ? "positive" : "non-negative") +
                             " integers");
    }
    shape.push_back(d.get<int64_t>());
  }
  return shape;
}

// The `name` and `configuration` of a zarr v3 codec / extension object.
struct Named {
  std::string name;
  json configuration;  // an object (empty when absent)
};

Result<Named> ParseNamed(const json& value, std::string_view field, std::string_view label) {
  if (value.is_string()) return Named{value.get<std::string>(), json::object()};
  if (!value.is_object() || !value.contains("name") || !value["name"].is_string()) {
    return InvalidArgument(std::string(label) + ": " + std::string(field) + " " + value.dump() +
                           " has no \"name\"");
  }
  Named named{value["name"].get<std::string>(), json::object()};
  if (const json* config = Member(value, "configuration")) {
    if (!config->is_object()) {
      return InvalidArgument(std::string(label) + ": " + std::string(field) + " \"" + named.name +
                             "\": configuration is not an object");
    }
    named.configuration = *config;
  }
  return named;
}

// The `bytes` codec: little endian only. 1-byte types need no endian.
Status CheckBytesCodec(const Named& codec, DType dtype, std::string_view label) {
  const json* endian = Member(codec.configuration, "endian");
  if (!endian) {
    if (DTypeSize(dtype) <= 1) return Status::Ok();
    return InvalidArgument(std::string(label) +
                           ": \"bytes\" codec has no \"endian\" for data type " +
                           std::string(ZarrName(dtype)));
  }
  if (*endian == "little") return Status::Ok();
  if (*endian == "big") {
    return Unsupported(std::string(label) +
                       ": big-endian \"bytes\" codec is not supported (only little endian)");
  }
  return InvalidArgument(std::string(label) + ": \"bytes\" codec endian " + endian->dump() +
                         " is neither \"little\" nor \"big\"");
}

Result<int> ZstdLevel(const json& configuration, int default_level, std::string_view label) {
  const json* level = Member(configuration, "level");
  if (!level) return default_level;
  if (!level->is_number_integer() || level->get<int64_t>() < kMinZstdLevel ||
      level->get<int64_t>() > kMaxZstdLevel) {
    return InvalidArgument(std::string(label) + ": zstd level " + level->dump() +
                           " is not an integer in [" + std::to_string(kMinZstdLevel) + ", " +
                           std::to_string(kMaxZstdLevel) + "]");
  }
  return static_cast<int>(level->get<int64_t>());
}

Status UnsupportedCodec(const std::string& name, std::string_view where, std::string_view label) {
  return Unsupported(std::string(label) + ": codec \"" + name + "\"" + std::string(where) +
                     " is not supported (ckptbridge reads bytes, zstd, crc32c and "
                     "sharding_indexed)");
}

// A chain that ends in arrays of bytes: `bytes` then optionally `zstd`.
// Sets m.zstd / m.zstd_level.
Status ParseChunkCodecs(const json& codecs, std::string_view where, ArrayMetadata& m,
                        std::string_view label) {
  if (!codecs.is_array() || codecs.empty()) {
    return InvalidArgument(std::string(label) + ": codecs" + std::string(where) +
                           " is not a non-empty array");
  }
  m.zstd = false;
  for (size_t i = 0; i < codecs.size(); ++i) {
    CKB_ASSIGN_OR_RETURN(Named codec, ParseNamed(codecs[i], "codec", label));
    if (i == 0) {
      if (codec.name != "bytes") return UnsupportedCodec(codec.name, where, label);
      CKB_RETURN_IF_ERROR(CheckBytesCodec(codec, m.dtype, label));
    } else if (i == 1 && codec.name == "zstd") {
      m.zstd = true;
      CKB_ASSIGN_OR_RETURN(m.zstd_level, ZstdLevel(codec.configuration, 3, label));
    } else {
      return UnsupportedCodec(codec.name, where, label);
    }
  }
  return Status::Ok();
}

Status ParseShardingCodec(const Named& codec, ArrayMetadata& m, std::string_view label) {
  const json& config = codec.configuration;
  CKB_ASSIGN_OR_RETURN(const json* inner,
                       Required(config, "chunk_shape", label, "sharding_indexed "));
  CKB_ASSIGN_OR_RETURN(m.inner_chunk_shape,
                       ParseShape(*inner, "sharding_indexed chunk_shape", label, true));
  if (m.inner_chunk_shape.size() != m.chunk_shape.size()) {
    return InvalidArgument(std::string(label) + ": sharding_indexed chunk_shape " +
                           ShapeString(m.inner_chunk_shape) + " and chunk grid " +
                           ShapeString(m.chunk_shape) + " differ in rank");
  }
  for (size_t i = 0; i < m.chunk_shape.size(); ++i) {
    if (m.chunk_shape[i] % m.inner_chunk_shape[i] != 0) {
      return InvalidArgument(std::string(label) + ": sharding_indexed chunk_shape " +
                             ShapeString(m.inner_chunk_shape) +
                             " does not divide the shard shape " + ShapeString(m.chunk_shape));
    }
  }
  CKB_ASSIGN_OR_RETURN(const json* codecs, Required(config, "codecs", label, "sharding_indexed "));
  CKB_RETURN_IF_ERROR(ParseChunkCodecs(*codecs, " inside sharding_indexed", m, label));

  CKB_ASSIGN_OR_RETURN(const json* index_codecs,
                       Required(config, "index_codecs", label, "sharding_indexed "));
  if (!index_codecs->is_array() || index_codecs->empty()) {
    return InvalidArgument(std::string(label) +
                           ": sharding_indexed index_codecs is not a "
                           "non-empty array");
  }
  m.index_crc32c = false;
  for (size_t i = 0; i < index_codecs->size(); ++i) {
    CKB_ASSIGN_OR_RETURN(Named index_codec, ParseNamed((*index_codecs)[i], "index codec", label));
    if (i == 0 && index_codec.name == "bytes") {
      // The index is uint64, so the endian must be given.
      CKB_RETURN_IF_ERROR(CheckBytesCodec(index_codec, DType::kU64, label));
    } else if (i == 1 && index_codec.name == "crc32c") {
      m.index_crc32c = true;
    } else {
      return UnsupportedCodec(index_codec.name, " in index_codecs", label);
    }
  }

  m.index_at_end = true;
  if (const json* location = Member(config, "index_location")) {
    if (*location == "start") {
      m.index_at_end = false;
    } else if (*location != "end") {
      return InvalidArgument(std::string(label) + ": sharding_indexed index_location " +
                             location->dump() + " is neither \"start\" nor \"end\"");
    }
  }
  return Status::Ok();
}

Status CheckChunkBytes(const ArrayMetadata& m, std::string_view label) {
  CKB_RETURN_IF_ERROR(NumBytes(m.chunk_shape, DTypeSize(m.dtype)).status().WithContext(label));
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Chunk geometry.

// Calls `f(index)` for every index of `grid` in C order (once, with {}, for
// rank 0; never when a dimension is 0).
template <typename F>
Status ForEachIndex(const std::vector<int64_t>& grid, F&& f) {
  for (int64_t g : grid) {
    if (g == 0) return Status::Ok();
  }
  std::vector<int64_t> index(grid.size(), 0);
  for (;;) {
    CKB_RETURN_IF_ERROR(f(index));
    size_t d = grid.size();
    for (;;) {
      if (d == 0) return Status::Ok();
      --d;
      if (++index[d] < grid[d]) break;
      index[d] = 0;
    }
  }
}

std::vector<int64_t> InnerGrid(const ArrayMetadata& m) {
  std::vector<int64_t> grid(m.chunk_shape.size());
  for (size_t i = 0; i < grid.size(); ++i) grid[i] = m.chunk_shape[i] / m.inner_chunk_shape[i];
  return grid;
}

std::vector<int64_t> Scaled(const std::vector<int64_t>& index, const Shape& by) {
  std::vector<int64_t> out(index.size());
  for (size_t i = 0; i < index.size(); ++i) out[i] = index[i] * by[i];
  return out;
}

json BytesCodecJson(DType dtype) {
  // TensorStore drops `endian` (and with it `configuration`) for 1-byte types.
  if (DTypeSize(dtype) <= 1) return {{"name", "bytes"}};
  return {{"configuration", {{"endian", "little"}}}, {"name", "bytes"}};
}

}  // namespace

Result<json> ParseMetadataJson(std::string_view text, std::string_view label) {
  JsonFailure failure;
  if (std::optional<json> parsed = TryParseJson(text, failure)) return *parsed;
  switch (failure.kind) {
    case JsonFailure::Kind::kTooDeep:
      return InvalidArgument(std::string(label) + ": invalid JSON: nested deeper than " +
                             std::to_string(kMaxJsonDepth) + " levels");
    case JsonFailure::Kind::kSyntax:
      return InvalidArgument(std::string(label) + ": invalid JSON at byte " +
                             std::to_string(failure.byte));
    case JsonFailure::Kind::kOther:
      break;
  }
  return InvalidArgument(std::string(label) + ": invalid JSON: " + failure.what);
}

// ---------------------------------------------------------------------------
// ArrayMetadata

ArrayMetadata ArrayMetadata::ForWrite(DType dtype, Shape shape, Shape chunk_shape) {
  ArrayMetadata m;
  m.format = ZarrFormat::kV3;
  m.dtype = dtype;
  m.shape = std::move(shape);
  m.chunk_shape = std::move(chunk_shape);
  m.inner_chunk_shape = m.chunk_shape;
  m.zstd = true;
  m.zstd_level = 3;
  m.index_crc32c = true;
  // TensorStore writes a float zero as the JSON number 0.0.
  if (dtype == DType::kBool) {
    m.fill_value = false;
  } else if (IsFloating(dtype)) {
    m.fill_value = 0.0;
  } else {
    m.fill_value = 0;
  }
  return m;
}

ArrayMetadata ArrayMetadata::ForWriteZarr2(DType dtype, Shape shape, Shape chunk_shape) {
  ArrayMetadata m;
  m.format = ZarrFormat::kV2;
  m.dtype = dtype;
  m.shape = std::move(shape);
  m.chunk_shape = std::move(chunk_shape);
  m.inner_chunk_shape = m.chunk_shape;
  m.zstd = true;
  m.zstd_level = 1;
  m.index_crc32c = false;
  m.sharded = false;
  // Orbax sets no fill value; TensorStore then writes null (and reads
  // missing chunks as zeros).
  m.fill_value = nullptr;
  m.v2_separator = '.';
  return m;
}

Result<ArrayMetadata> ArrayMetadata::ParseZarr3(std::string_view json_text,
                                                std::string_view label) {
  CKB_ASSIGN_OR_RETURN(json root, ParseMetadataJson(json_text, label));
  if (!root.is_object()) return InvalidArgument(std::string(label) + ": not a JSON object");
  ArrayMetadata m;
  m.format = ZarrFormat::kV3;

  CKB_ASSIGN_OR_RETURN(const json* format, Required(root, "zarr_format", label));
  if (*format != 3) {
    return InvalidArgument(std::string(label) + ": zarr_format is " + format->dump() +
                           ", expected 3");
  }
  CKB_ASSIGN_OR_RETURN(const json* node_type, Required(root, "node_type", label));
  if (*node_type != "array") {
    return InvalidArgument(std::string(label) + ": node_type is " + node_type->dump() +
                           ", expected \"array\"");
  }
  CKB_ASSIGN_OR_RETURN(const json* shape, Required(root, "shape", label));
  CKB_ASSIGN_OR_RETURN(m.shape, ParseShape(*shape, "shape", label, false));

  CKB_ASSIGN_OR_RETURN(const json* data_type, Required(root, "data_type", label));
  if (!data_type->is_string()) {
    return Unsupported(std::string(label) + ": data_type " + data_type->dump() +
                       " is not supported");
  }
  const std::optional<DType> dtype = DTypeFromZarrName(data_type->get<std::string>());
  if (!dtype) {
    return Unsupported(std::string(label) + ": data_type " + data_type->dump() +
                       " is not supported");
  }
  m.dtype = *dtype;

  CKB_ASSIGN_OR_RETURN(const json* grid_json, Required(root, "chunk_grid", label));
  CKB_ASSIGN_OR_RETURN(Named grid, ParseNamed(*grid_json, "chunk_grid", label));
  if (grid.name != "regular") {
    return Unsupported(std::string(label) + ": chunk_grid " + Quoted(grid.name) +
                       " is not supported (only \"regular\")");
  }
  CKB_ASSIGN_OR_RETURN(const json* chunk_shape,
                       Required(grid.configuration, "chunk_shape", label, "chunk_grid "));
  CKB_ASSIGN_OR_RETURN(m.chunk_shape, ParseShape(*chunk_shape, "chunk_shape", label, true));
  if (m.chunk_shape.size() != m.shape.size()) {
    return InvalidArgument(std::string(label) + ": chunk_shape " + ShapeString(m.chunk_shape) +
                           " and shape " + ShapeString(m.shape) + " differ in rank");
  }
  CKB_RETURN_IF_ERROR(CheckChunkBytes(m, label));

  CKB_ASSIGN_OR_RETURN(const json* encoding_json, Required(root, "chunk_key_encoding", label));
  CKB_ASSIGN_OR_RETURN(Named encoding, ParseNamed(*encoding_json, "chunk_key_encoding", label));
  if (encoding.name == "default") {
    m.v3_default_keys = true;
    m.v3_separator = '/';
  } else if (encoding.name == "v2") {
    m.v3_default_keys = false;
    m.v3_separator = '.';
  } else {
    return Unsupported(std::string(label) + ": chunk_key_encoding " + Quoted(encoding.name) +
                       " is not supported");
  }
  if (const json* separator = Member(encoding.configuration, "separator")) {
    if (*separator == "/") {
      m.v3_separator = '/';
    } else if (*separator == ".") {
      m.v3_separator = '.';
    } else {
      return InvalidArgument(std::string(label) + ": chunk_key_encoding separator " +
                             separator->dump() + " is neither \"/\" nor \".\"");
    }
  }

  if (const json* transformers = Member(root, "storage_transformers")) {
    if (!transformers->is_array() || !transformers->empty()) {
      return Unsupported(std::string(label) + ": storage_transformers are not supported");
    }
  }

  CKB_ASSIGN_OR_RETURN(const json* codecs, Required(root, "codecs", label));
  if (!codecs->is_array() || codecs->empty()) {
    return InvalidArgument(std::string(label) + ": codecs is not a non-empty array");
  }
  CKB_ASSIGN_OR_RETURN(Named first, ParseNamed((*codecs)[0], "codec", label));
  if (first.name == "sharding_indexed") {
    m.sharded = true;
    if (codecs->size() > 1) {
      CKB_ASSIGN_OR_RETURN(Named after, ParseNamed((*codecs)[1], "codec", label));
      return UnsupportedCodec(after.name, " after sharding_indexed", label);
    }
    CKB_RETURN_IF_ERROR(ParseShardingCodec(first, m, label));
  } else {
    m.sharded = false;
    m.index_crc32c = false;
    m.inner_chunk_shape = m.chunk_shape;
    CKB_RETURN_IF_ERROR(ParseChunkCodecs(*codecs, "", m, label));
  }

  CKB_ASSIGN_OR_RETURN(const json* fill, Required(root, "fill_value", label));
  m.fill_value = *fill;
  CKB_RETURN_IF_ERROR(FillElement(m, label).status());
  return m;
}

Result<ArrayMetadata> ArrayMetadata::ParseZarr2(std::string_view json_text,
                                                std::string_view label) {
  CKB_ASSIGN_OR_RETURN(json root, ParseMetadataJson(json_text, label));
  if (!root.is_object()) return InvalidArgument(std::string(label) + ": not a JSON object");
  ArrayMetadata m;
  m.format = ZarrFormat::kV2;
  m.sharded = false;
  m.index_crc32c = false;

  CKB_ASSIGN_OR_RETURN(const json* format, Required(root, "zarr_format", label));
  if (*format != 2) {
    return InvalidArgument(std::string(label) + ": zarr_format is " + format->dump() +
                           ", expected 2");
  }
  CKB_ASSIGN_OR_RETURN(const json* shape, Required(root, "shape", label));
  CKB_ASSIGN_OR_RETURN(m.shape, ParseShape(*shape, "shape", label, false));
  CKB_ASSIGN_OR_RETURN(const json* chunks, Required(root, "chunks", label));
  CKB_ASSIGN_OR_RETURN(m.chunk_shape, ParseShape(*chunks, "chunks", label, true));
  if (m.chunk_shape.size() != m.shape.size()) {
    return InvalidArgument(std::string(label) + ": chunks " + ShapeString(m.chunk_shape) +
                           " and shape " + ShapeString(m.shape) + " differ in rank");
  }
  m.inner_chunk_shape = m.chunk_shape;

  CKB_ASSIGN_OR_RETURN(const json* dtype_json, Required(root, "dtype", label));
  const std::optional<DType> dtype =
      dtype_json->is_string() ? DTypeFromZarrV2Name(dtype_json->get<std::string>()) : std::nullopt;
  if (!dtype) {
    return Unsupported(std::string(label) + ": dtype " + dtype_json->dump() + " is not supported");
  }
  m.dtype = *dtype;
  CKB_RETURN_IF_ERROR(CheckChunkBytes(m, label));

  CKB_ASSIGN_OR_RETURN(const json* compressor, Required(root, "compressor", label));
  if (compressor->is_null()) {
    m.zstd = false;
  } else {
    const json* id = compressor->is_object() ? Member(*compressor, "id") : nullptr;
    if (!id || !id->is_string()) {
      return InvalidArgument(std::string(label) + ": compressor " + compressor->dump() +
                             " has no \"id\"");
    }
    if (*id != "zstd") {
      return Unsupported(std::string(label) + ": compressor " + id->dump() +
                         " is not supported (only zstd or none)");
    }
    m.zstd = true;
    CKB_ASSIGN_OR_RETURN(m.zstd_level, ZstdLevel(*compressor, 1, label));
  }

  CKB_ASSIGN_OR_RETURN(const json* order, Required(root, "order", label));
  if (*order != "C") {
    return Unsupported(std::string(label) + ": order " + order->dump() +
                       " is not supported (only \"C\")");
  }
  CKB_ASSIGN_OR_RETURN(const json* filters, Required(root, "filters", label));
  if (!filters->is_null() && !(filters->is_array() && filters->empty())) {
    return Unsupported(std::string(label) + ": filters " + filters->dump() +
                       " are not supported (only null)");
  }
  m.v2_separator = '.';
  if (const json* separator = Member(root, "dimension_separator")) {
    if (*separator == "/") {
      m.v2_separator = '/';
    } else if (*separator != ".") {
      return InvalidArgument(std::string(label) + ": dimension_separator " + separator->dump() +
                             " is neither \".\" nor \"/\"");
    }
  }

  CKB_ASSIGN_OR_RETURN(const json* fill, Required(root, "fill_value", label));
  m.fill_value = *fill;
  CKB_RETURN_IF_ERROR(FillElement(m, label).status());
  return m;
}

std::string ArrayMetadata::ToZarr3Json() const {
  // nlohmann::json keeps object keys sorted, and dump() is compact: the
  // same text TensorStore produces.
  json inner_codecs = json::array({BytesCodecJson(dtype)});
  if (zstd) {
    inner_codecs.push_back(
        {{"configuration", {{"checksum", false}, {"level", zstd_level}}}, {"name", "zstd"}});
  }
  json codecs;
  if (sharded) {
    json index_codecs = json::array({BytesCodecJson(DType::kU64)});
    if (index_crc32c) index_codecs.push_back({{"name", "crc32c"}});
    json config = {{"chunk_shape", inner_chunk_shape},
                   {"codecs", inner_codecs},
                   {"index_codecs", index_codecs}};
    if (!index_at_end) config["index_location"] = "start";
    codecs = json::array({{{"configuration", config}, {"name", "sharding_indexed"}}});
  } else {
    codecs = inner_codecs;
  }
  json encoding = {{"name", v3_default_keys ? "default" : "v2"}};
  if (v3_separator != (v3_default_keys ? '/' : '.')) {
    encoding["configuration"] = {{"separator", std::string(1, v3_separator)}};
  }
  const json root = {
      {"chunk_grid", {{"configuration", {{"chunk_shape", chunk_shape}}}, {"name", "regular"}}},
      {"chunk_key_encoding", encoding},
      {"codecs", codecs},
      {"data_type", std::string(ZarrName(dtype))},
      {"fill_value", fill_value},
      {"node_type", "array"},
      {"shape", shape},
      {"zarr_format", 3},
  };
  return root.dump();
}

std::string ArrayMetadata::ToZarr2Json() const {
  json compressor = nullptr;
  if (zstd) compressor = {{"id", "zstd"}, {"level", zstd_level}};
  const json root = {
      {"chunks", chunk_shape},
      {"compressor", compressor},
      {"dimension_separator", std::string(1, v2_separator)},
      {"dtype", std::string(ZarrV2Name(dtype))},
      {"fill_value", fill_value},
      {"filters", nullptr},
      {"order", "C"},
      {"shape", shape},
      {"zarr_format", 2},
  };
  return root.dump();
}

std::string ArrayMetadata::ToJson() const {
  return format == ZarrFormat::kV3 ? ToZarr3Json() : ToZarr2Json();
}

std::string_view ArrayMetadata::MetadataKey() const {
  return format == ZarrFormat::kV3 ? "zarr.json" : ".zarray";
}

std::string ArrayMetadata::ChunkKey(const std::vector<int64_t>& index) const {
  const bool v3_prefix = format == ZarrFormat::kV3 && v3_default_keys;
  const char separator = format == ZarrFormat::kV3 ? v3_separator : v2_separator;
  std::string key = v3_prefix ? "c" : "";
  if (index.empty()) return v3_prefix ? key : "0";
  for (size_t i = 0; i < index.size(); ++i) {
    if (i > 0 || v3_prefix) key += separator;
    key += std::to_string(index[i]);
  }
  return key;
}

std::vector<int64_t> ArrayMetadata::ChunkGrid() const {
  std::vector<int64_t> grid(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    const int64_t chunk = std::max<int64_t>(chunk_shape[i], 1);
    grid[i] = shape[i] / chunk + (shape[i] % chunk != 0 ? 1 : 0);
  }
  return grid;
}

uint64_t ArrayMetadata::ChunkBytes() const {
  return static_cast<uint64_t>(NumElementsUnchecked(chunk_shape)) * DTypeSize(dtype);
}

// ---------------------------------------------------------------------------
// Chunks

Status EncodeChunk(const ArrayMetadata& metadata, std::string_view chunk_bytes,
                   ScratchBuffer& out) {
  if (chunk_bytes.size() != metadata.ChunkBytes()) {
    return InvalidArgument("chunk of " + std::to_string(chunk_bytes.size()) + " bytes, expected " +
                           std::to_string(metadata.ChunkBytes()) + " for chunk shape " +
                           ShapeString(metadata.chunk_shape) + " of " +
                           std::string(ZarrName(metadata.dtype)));
  }
  // Appends one encoded (inner) chunk to `out`.
  auto encode_one = [&](std::string_view bytes) -> Status {
    if (!metadata.zstd) {
      out.Append(bytes);
      return Status::Ok();
    }
    const size_t start = out.size();
    out.Resize(start + ZSTD_compressBound(bytes.size()));
    CKB_ASSIGN_OR_RETURN(const size_t n,
                         ZstdCompressInto(bytes, metadata.zstd_level, out.data() + start,
                                          out.size() - start, metadata.format == ZarrFormat::kV3));
    out.Resize(start + n);
    return Status::Ok();
  };
  out.Resize(0);
  if (metadata.format == ZarrFormat::kV2 || !metadata.sharded) return encode_one(chunk_bytes);

  // A shard: the inner chunks in C order, then the index (or the index
  // first, in room left for it). Index offsets are positions in `out`.
  const std::vector<int64_t> inner_grid = InnerGrid(metadata);
  const size_t entries = static_cast<size_t>(NumElementsUnchecked(inner_grid));
  const size_t index_size = entries * 16 + (metadata.index_crc32c ? 4 : 0);
  out.Resize(metadata.index_at_end ? 0 : index_size);
  const size_t element = DTypeSize(metadata.dtype);
  std::string index;
  auto add_entry = [&](size_t start) {
    PutU64(index, start);
    PutU64(index, out.size() - start);
  };
  if (entries == 1) {
    const size_t start = out.size();
    CKB_RETURN_IF_ERROR(encode_one(chunk_bytes));
    add_entry(start);
  } else {
    std::string inner(
        static_cast<size_t>(NumElementsUnchecked(metadata.inner_chunk_shape)) * element, '\0');
    CKB_RETURN_IF_ERROR(ForEachIndex(inner_grid, [&](const std::vector<int64_t>& i) -> Status {
      CopyBox(chunk_bytes.data(), metadata.chunk_shape, Scaled(i, metadata.inner_chunk_shape),
              inner.data(), metadata.inner_chunk_shape, std::vector<int64_t>(i.size(), 0),
              metadata.inner_chunk_shape, element);
      const size_t start = out.size();
      CKB_RETURN_IF_ERROR(encode_one(inner));
      add_entry(start);
      return Status::Ok();
    }));
  }
  if (metadata.index_crc32c) PutU32(index, ComputeCrc32c(index.data(), index.size()));
  if (metadata.index_at_end) {
    out.Append(index);
  } else {
    std::memcpy(out.data(), index.data(), index.size());
  }
  return Status::Ok();
}

Result<std::string> EncodeChunk(const ArrayMetadata& metadata, std::string_view chunk_bytes) {
  ScratchBuffer out;
  CKB_RETURN_IF_ERROR(EncodeChunk(metadata, chunk_bytes, out));
  return std::string(out.view());
}

Status DecodeChunk(const ArrayMetadata& metadata, std::string_view value, std::string_view label,
                   char* out) {
  const size_t chunk_bytes = metadata.ChunkBytes();
  auto decode_one = [&](std::string_view encoded, char* dst, size_t size,
                        std::string_view what) -> Status {
    if (metadata.zstd) return ZstdDecompressInto(encoded, dst, size, what);
    if (encoded.size() != size) {
      return DataLoss(std::string(what) + ": " + std::to_string(encoded.size()) +
                      " bytes, expected " + std::to_string(size));
    }
    std::memcpy(dst, encoded.data(), size);
    return Status::Ok();
  };
  if (metadata.format == ZarrFormat::kV2 || !metadata.sharded) {
    return decode_one(value, out, chunk_bytes, label);
  }

  // A shard (shared/docs/orbax-format.md §3.4).
  const std::vector<int64_t> inner_grid = InnerGrid(metadata);
  const size_t entries = static_cast<size_t>(NumElementsUnchecked(inner_grid));
  const size_t index_bytes = entries * 16;
  const size_t index_size = index_bytes + (metadata.index_crc32c ? 4 : 0);
  if (value.size() < index_size) {
    return DataLoss(std::string(label) + ": shard of " + std::to_string(value.size()) +
                    " bytes is shorter than its " + std::to_string(index_size) + "-byte index");
  }
  const size_t index_start = metadata.index_at_end ? value.size() - index_size : 0;
  const char* index = value.data() + index_start;
  if (metadata.index_crc32c) {
    const uint32_t stored = GetU32(index + index_bytes);
    const uint32_t computed = ComputeCrc32c(index, index_bytes);
    if (stored != computed) {
      return DataLoss(std::string(label) + ": shard index CRC-32C mismatch (stored " +
                      Hex32(stored) + ", computed " + Hex32(computed) + ")");
    }
  }
  // Inner chunks live outside the index.
  const uint64_t data_begin = metadata.index_at_end ? 0 : index_size;
  const uint64_t data_end = metadata.index_at_end ? value.size() - index_size : value.size();

  const Shape& inner_shape = metadata.inner_chunk_shape;
  const size_t element = DTypeSize(metadata.dtype);
  const size_t inner_bytes = static_cast<size_t>(NumElementsUnchecked(inner_shape)) * element;
  std::string scratch;
  std::optional<std::string> fill;
  size_t entry = 0;
  CKB_RETURN_IF_ERROR(ForEachIndex(inner_grid, [&](const std::vector<int64_t>& i) -> Status {
    const uint64_t offset = GetU64(index + 16 * entry);
    const uint64_t nbytes = GetU64(index + 16 * entry + 8);
    const std::string what = std::string(label) + ": inner chunk " + std::to_string(entry);
    ++entry;
    const std::vector<int64_t> origin = Scaled(i, inner_shape);
    const std::vector<int64_t> zero(i.size(), 0);
    if (offset == kMissing && nbytes == kMissing) {
      if (!fill) {
        CKB_ASSIGN_OR_RETURN(fill, FillChunk(metadata, inner_bytes, label));
      }
      CopyBox(fill->data(), inner_shape, zero, out, metadata.chunk_shape, origin, inner_shape,
              element);
      return Status::Ok();
    }
    if (offset < data_begin || offset > data_end || nbytes > data_end - offset) {
      return DataLoss(what + ": bytes [" + std::to_string(offset) + ", +" + std::to_string(nbytes) +
                      ") lie outside the shard's data [" + std::to_string(data_begin) + ", " +
                      std::to_string(data_end) + ")");
    }
    const std::string_view encoded = value.substr(offset, nbytes);
    if (entries == 1) return decode_one(encoded, out, chunk_bytes, what);
    scratch.resize(inner_bytes);
    CKB_RETURN_IF_ERROR(decode_one(encoded, scratch.data(), inner_bytes, what));
    CopyBox(scratch.data(), inner_shape, zero, out, metadata.chunk_shape, origin, inner_shape,
            element);
    return Status::Ok();
  }));
  return Status::Ok();
}

Result<std::string> DecodeChunk(const ArrayMetadata& metadata, std::string_view value,
                                std::string_view label) {
  const size_t chunk_bytes = metadata.ChunkBytes();
  std::string out;
  try {
    out.resize(chunk_bytes);
  } catch (const std::bad_alloc&) {
    return ResourceExhausted(std::string(label) + ": cannot allocate a chunk of " +
                             std::to_string(chunk_bytes) + " bytes");
  }
  CKB_RETURN_IF_ERROR(DecodeChunk(metadata, value, label, out.data()));
  return out;
}

Result<std::string> FillValueChunk(const ArrayMetadata& metadata, std::string_view label) {
  return FillChunk(metadata, metadata.ChunkBytes(), label);
}

}  // namespace ckptbridge::orbax
