#include "host/formats/orbax/ocdbt_format.h"

#include <zstd.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <memory>
#include <new>
#include <random>
#include <utility>

#include "host/base/checksum.h"

namespace ckptbridge::orbax::ocdbt {
namespace {

constexpr uint64_t kMissingOffset = std::numeric_limits<uint64_t>::max();
constexpr size_t kEnvelopeHeaderBytes = 12;  // magic + length
constexpr size_t kEnvelopeMinBytes = kEnvelopeHeaderBytes + 4;

std::string Hex32(uint32_t v) {
  char buffer[11];
  std::snprintf(buffer, sizeof(buffer), "0x%08x", v);
  return buffer;
}

// ---------------------------------------------------------------------------
// Writing primitives.

void PutVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void PutLittleEndian(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

size_t CommonPrefixLength(std::string_view a, std::string_view b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

// ---------------------------------------------------------------------------
// Reading primitives: a cursor that records the first problem it meets.

class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  size_t pos() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }

  bool Fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }

  bool Byte(uint8_t& v, std::string_view field) {
    if (remaining() < 1) return Truncated(field);
    v = static_cast<uint8_t>(data_[pos_++]);
    return true;
  }

  // An unsigned LEB128 varint of at most `bits` bits (riegeli's
  // ReadVarint32 / ReadVarint64: at most 5 / 10 bytes, no excess bits).
  bool Varint(uint64_t& v, std::string_view field, int bits = 64) {
    const int max_bytes = (bits + 6) / 7;
    v = 0;
    for (int i = 0;; ++i) {
      if (remaining() < 1) return Truncated(field);
      const auto byte = static_cast<uint8_t>(data_[pos_++]);
      if (i == max_bytes - 1 && (byte >> (bits - 7 * i)) != 0) {
        return Fail("invalid " + std::to_string(bits) + "-bit varint in " + std::string(field) +
                    " at byte " + std::to_string(pos_ - 1));
      }
      v |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
      if ((byte & 0x80) == 0) return true;
    }
  }

  // A varint that must not exceed `max` (TensorStore reads these fields as
  // 16- or 32-bit values).
  bool BoundedVarint(uint64_t& v, std::string_view field, uint64_t max) {
    if (!Varint(v, field, max <= 0xffffffffu ? 32 : 64)) return false;
    if (v > max) {
      return Fail(std::string(field) + " is " + std::to_string(v) + ", more than " +
                  std::to_string(max));
    }
    return true;
  }

  bool LittleEndian(uint64_t& v, int bytes, std::string_view field) {
    if (remaining() < static_cast<size_t>(bytes)) return Truncated(field);
    v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(data_[pos_ + i]);
    pos_ += bytes;
    return true;
  }

  bool Bytes(uint64_t n, std::string_view& out, std::string_view field) {
    if (remaining() < n) return Truncated(field);
    out = data_.substr(pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return true;
  }

  // Each of `count` entries takes at least one more byte: refuses counts the
  // remaining data cannot hold before anything is allocated for them.
  bool CheckCount(uint64_t count, std::string_view what) {
    if (count > remaining()) {
      return Fail(std::string(what) + " count " + std::to_string(count) + " exceeds the " +
                  std::to_string(remaining()) + " bytes left");
    }
    return true;
  }

  bool ExpectEnd(std::string_view what) {
    if (!ok()) return false;
    if (remaining() != 0) {
      return Fail(std::to_string(remaining()) + " unexpected bytes after the " + std::string(what));
    }
    return true;
  }

 private:
  bool Truncated(std::string_view field) {
    return Fail("truncated: the data ends at byte " + std::to_string(data_.size()) +
                " while reading " + std::string(field));
  }

  std::string_view data_;
  size_t pos_ = 0;
  std::string error_;
};

std::string Indexed(std::string_view field, size_t i) {
  return std::string(field) + "[" + std::to_string(i) + "]";
}

Status BodyError(std::string_view label, std::string_view what, const Reader& reader) {
  return DataLoss(std::string(label) + ": " + std::string(what) + ": " + reader.error());
}

// ---------------------------------------------------------------------------
// zstd

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

// One frame that records its content size: what riegeli's ZstdWriter emits
// for a body written in one piece (byte for byte, with libzstd 1.5).
Status ZstdCompressAppend(std::string_view input, int level, std::string& out) {
  const size_t start = out.size();
  out.resize(start + ZSTD_compressBound(input.size()));
  const size_t n = ZSTD_compressCCtx(Contexts().cctx.get(), out.data() + start, out.size() - start,
                                     input.data(), input.size(), level);
  if (ZSTD_isError(n)) {
    return Internal(std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
  }
  out.resize(start + n);
  return Status::Ok();
}

// Decodes exactly one zstd frame filling all of `frame`, into at most
// `max_bytes` bytes. Frames without a recorded size are streamed.
Result<std::string> ZstdDecompressBounded(std::string_view frame, uint64_t max_bytes,
                                          std::string_view label) {
  const size_t frame_size = ZSTD_findFrameCompressedSize(frame.data(), frame.size());
  if (ZSTD_isError(frame_size)) {
    return DataLoss(std::string(label) + ": corrupt zstd frame (" + ZSTD_getErrorName(frame_size) +
                    ")");
  }
  if (frame_size != frame.size()) {
    return DataLoss(std::string(label) + ": the zstd frame ends at byte " +
                    std::to_string(frame_size) + " of the " + std::to_string(frame.size()) +
                    "-byte compressed body");
  }
  const unsigned long long content = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (content == ZSTD_CONTENTSIZE_ERROR) {
    return DataLoss(std::string(label) + ": not a zstd frame");
  }
  auto too_large = [&](uint64_t bytes) {
    return DataLoss(std::string(label) + ": the body decompresses to " + std::to_string(bytes) +
                    (bytes > max_bytes ? " bytes, more than the limit of " : " bytes, limit ") +
                    std::to_string(max_bytes));
  };
  std::string out;
  ZSTD_DCtx* dctx = Contexts().dctx.get();
  ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only);
  if (content != ZSTD_CONTENTSIZE_UNKNOWN) {
    if (content > max_bytes) return too_large(content);
    out.resize(static_cast<size_t>(content));
    const size_t n = ZSTD_decompressDCtx(dctx, out.data(), out.size(), frame.data(), frame.size());
    if (ZSTD_isError(n)) {
      return DataLoss(std::string(label) + ": corrupt zstd frame (" + ZSTD_getErrorName(n) + ")");
    }
    if (n != content) {
      return DataLoss(std::string(label) + ": zstd frame decodes to " + std::to_string(n) +
                      " bytes, but records " + std::to_string(content));
    }
    return out;
  }
  ZSTD_inBuffer in{frame.data(), frame.size(), 0};
  size_t step = std::max<size_t>(ZSTD_DStreamOutSize(), frame.size() * 4);
  for (;;) {
    const size_t start = out.size();
    const size_t room = static_cast<size_t>(std::min<uint64_t>(step, max_bytes + 1 - start));
    out.resize(start + room);
    ZSTD_outBuffer buffer{out.data() + start, room, 0};
    const size_t rc = ZSTD_decompressStream(dctx, &buffer, &in);
    out.resize(start + buffer.pos);
    if (ZSTD_isError(rc)) {
      return DataLoss(std::string(label) + ": corrupt zstd frame (" + ZSTD_getErrorName(rc) + ")");
    }
    if (out.size() > max_bytes) return too_large(out.size());
    if (rc == 0) return out;
    if (in.pos == in.size && buffer.pos < room) {
      return DataLoss(std::string(label) + ": truncated zstd frame");
    }
    step *= 2;
  }
}

// ---------------------------------------------------------------------------
// Data file tables (data_file_id_codec.cc).

// Files referenced by a node or manifest, sorted (base path, then relative
// path) and unique; entries refer to them by index.
class TableBuilder {
 public:
  void Add(const DataFileId& file) { files_.push_back(file); }

  Status Finish(std::string& out) {
    std::sort(files_.begin(), files_.end());
    files_.erase(std::unique(files_.begin(), files_.end()), files_.end());
    PutVarint(out, files_.size());
    if (files_.empty()) return Status::Ok();
    std::vector<size_t> prefix(files_.size(), 0);
    for (size_t i = 1; i < files_.size(); ++i) {
      const DataFileId& prev = files_[i - 1];
      const DataFileId& cur = files_[i];
      size_t length = CommonPrefixLength(prev.base_path, cur.base_path);
      // The shared prefix runs into the relative path only when the base
      // paths are identical.
      if (prev.base_path.size() == cur.base_path.size() && length == cur.base_path.size()) {
        length += CommonPrefixLength(prev.relative_path, cur.relative_path);
      }
      prefix[i] = length;
      PutVarint(out, length);
    }
    for (size_t i = 0; i < files_.size(); ++i) {
      const size_t full = files_[i].base_path.size() + files_[i].relative_path.size();
      if (full > kMaxPathLength) {
        return InvalidArgument("ocdbt: data file path of " + std::to_string(full) +
                               " bytes exceeds the limit of " + std::to_string(kMaxPathLength));
      }
      PutVarint(out, full - prefix[i]);
    }
    for (const DataFileId& file : files_) PutVarint(out, file.base_path.size());
    for (size_t i = 0; i < files_.size(); ++i) {
      const std::string& base = files_[i].base_path;
      const size_t in_base = std::min(prefix[i], base.size());
      out.append(base, in_base);
      out.append(files_[i].relative_path, prefix[i] - in_base);
    }
    return Status::Ok();
  }

  uint64_t Index(const DataFileId& file) const {
    return static_cast<uint64_t>(std::lower_bound(files_.begin(), files_.end(), file) -
                                 files_.begin());
  }

 private:
  std::vector<DataFileId> files_;
};

bool ReadDataFileTable(Reader& r, std::vector<DataFileId>& files) {
  uint64_t n;
  if (!r.Varint(n, "num_files")) return false;
  // Each file takes at least two length bytes.
  if (!r.CheckCount(n / 2, "data file")) return false;
  std::vector<uint64_t> prefix(n, 0), suffix(n), base(n);
  for (uint64_t i = 1; i < n; ++i) {
    if (!r.BoundedVarint(prefix[i], Indexed("path_prefix_length", i), kMaxPathLength)) {
      return false;
    }
  }
  for (uint64_t i = 0; i < n; ++i) {
    if (!r.BoundedVarint(suffix[i], Indexed("path_suffix_length", i), kMaxPathLength)) {
      return false;
    }
  }
  for (uint64_t i = 0; i < n; ++i) {
    if (!r.BoundedVarint(base[i], Indexed("base_path_length", i), kMaxPathLength)) return false;
  }
  files.resize(n);
  std::string previous;
  uint64_t previous_base = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t length = prefix[i] + suffix[i];
    if (prefix[i] > previous.size()) {
      return r.Fail(Indexed("path_prefix_length", i) + " = " + std::to_string(prefix[i]) +
                    " exceeds the previous path's length " + std::to_string(previous.size()));
    }
    if (length > kMaxPathLength) {
      return r.Fail(Indexed("path_length", i) + " = " + std::to_string(length) +
                    " exceeds the limit of " + std::to_string(kMaxPathLength));
    }
    if (base[i] > length) {
      return r.Fail(Indexed("base_path_length", i) + " = " + std::to_string(base[i]) +
                    " exceeds the path length " + std::to_string(length));
    }
    // A shared prefix may run past a base path only into an identical one
    // (TensorStore's rule); TensorStore would also misread a prefix that
    // covers a shorter base path, so that is refused too.
    if (i > 0 && base[i] != previous_base &&
        (prefix[i] > std::min(previous_base, base[i]) || (base[i] > 0 && prefix[i] >= base[i]))) {
      return r.Fail(Indexed("path_prefix_length", i) + " = " + std::to_string(prefix[i]) +
                    " crosses base_path_length " + std::to_string(base[i]) +
                    ", which differs from the previous base_path_length " +
                    std::to_string(previous_base));
    }
    std::string_view bytes;
    if (!r.Bytes(suffix[i], bytes, Indexed("path_suffix", i))) return false;
    std::string full = previous.substr(0, prefix[i]);
    full.append(bytes);
    files[i].base_path = full.substr(0, base[i]);
    files[i].relative_path = full.substr(base[i]);
    previous = std::move(full);
    previous_base = base[i];
  }
  return true;
}

// ---------------------------------------------------------------------------
// References and statistics.

bool ReadFileIndex(Reader& r, const std::vector<DataFileId>& files, DataFileId& out,
                   std::string_view field) {
  uint64_t index;
  if (!r.Varint(index, field)) return false;
  if (index >= files.size()) {
    return r.Fail(std::string(field) + " = " + std::to_string(index) +
                  " is outside the data file table [0, " + std::to_string(files.size()) + ")");
  }
  out = files[index];
  return true;
}

// Columns: file ids, offsets, lengths (IndirectDataReferenceArrayCodec).
template <typename Get>
bool ReadRefs(Reader& r, const std::vector<DataFileId>& files, size_t n, Get get,
              bool allow_missing, std::string_view what) {
  for (size_t i = 0; i < n; ++i) {
    if (!ReadFileIndex(r, files, get(i).file, Indexed(std::string(what) + ".data_file_id", i))) {
      return false;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (!r.Varint(get(i).offset, Indexed(std::string(what) + ".offset", i))) return false;
  }
  for (size_t i = 0; i < n; ++i) {
    if (!r.Varint(get(i).length, Indexed(std::string(what) + ".length", i))) return false;
  }
  for (size_t i = 0; i < n; ++i) {
    const DataRef& ref = get(i);
    if (allow_missing && ref.IsMissing()) continue;
    if (ref.offset > kMissingOffset - ref.length) {
      return r.Fail(Indexed(what, i) + ": offset " + std::to_string(ref.offset) + " + length " +
                    std::to_string(ref.length) + " overflows");
    }
  }
  return true;
}

template <typename Get>
void PutRefs(std::string& out, const TableBuilder& table, size_t n, Get get) {
  for (size_t i = 0; i < n; ++i) PutVarint(out, table.Index(get(i).file));
  for (size_t i = 0; i < n; ++i) PutVarint(out, get(i).offset);
  for (size_t i = 0; i < n; ++i) PutVarint(out, get(i).length);
}

template <typename Get>
bool ReadStatistics(Reader& r, size_t n, Get get, std::string_view what) {
  for (size_t i = 0; i < n; ++i) {
    if (!r.Varint(get(i).num_keys, Indexed(std::string(what) + ".num_keys", i))) return false;
  }
  for (size_t i = 0; i < n; ++i) {
    if (!r.Varint(get(i).num_tree_bytes, Indexed(std::string(what) + ".num_tree_bytes", i))) {
      return false;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (!r.Varint(get(i).num_indirect_value_bytes,
                  Indexed(std::string(what) + ".num_indirect_value_bytes", i))) {
      return false;
    }
  }
  return true;
}

template <typename Get>
void PutStatistics(std::string& out, size_t n, Get get) {
  for (size_t i = 0; i < n; ++i) PutVarint(out, get(i).num_keys);
  for (size_t i = 0; i < n; ++i) PutVarint(out, get(i).num_tree_bytes);
  for (size_t i = 0; i < n; ++i) PutVarint(out, get(i).num_indirect_value_bytes);
}

// ---------------------------------------------------------------------------
// Config and version entries.

bool ReadConfig(Reader& r, Config& config) {
  std::string_view uuid;
  if (!r.Bytes(16, uuid, "uuid")) return false;
  std::copy(uuid.begin(), uuid.end(), config.uuid.begin());
  uint8_t kind = 0;
  if (!r.Byte(kind, "manifest_kind")) return false;
  if (kind > 1) return r.Fail("manifest_kind " + std::to_string(kind) + " is not 0 or 1");
  config.manifest_kind = static_cast<ManifestKind>(kind);
  uint64_t v;
  if (!r.BoundedVarint(v, "max_inline_value_bytes", kMaxInlineValueLength)) return false;
  config.max_inline_value_bytes = static_cast<uint32_t>(v);
  if (!r.BoundedVarint(v, "max_decoded_node_bytes", 0xffffffffu)) return false;
  config.max_decoded_node_bytes = static_cast<uint32_t>(v);
  if (!r.Byte(config.version_tree_arity_log2, "version_tree_arity_log2")) return false;
  if (config.version_tree_arity_log2 < 1 || config.version_tree_arity_log2 > 16) {
    return r.Fail("version_tree_arity_log2 " + std::to_string(config.version_tree_arity_log2) +
                  " is outside [1, 16]");
  }
  if (!r.BoundedVarint(v, "compression_method", 0xffffffffu)) return false;
  if (v > 1) return r.Fail("compression_method " + std::to_string(v) + " is not 0 or 1");
  config.zstd = v == 1;
  config.zstd_level = 0;
  if (config.zstd) {
    if (!r.LittleEndian(v, 4, "zstd_level")) return false;
    const auto level = static_cast<int32_t>(static_cast<uint32_t>(v));
    if (level < kMinZstdLevel || level > kMaxZstdLevel) {
      return r.Fail("zstd_level " + std::to_string(level) + " is outside [" +
                    std::to_string(kMinZstdLevel) + ", " + std::to_string(kMaxZstdLevel) + "]");
    }
    config.zstd_level = level;
  }
  return true;
}

void PutConfig(std::string& out, const Config& config) {
  out.append(reinterpret_cast<const char*>(config.uuid.data()), config.uuid.size());
  out.push_back(static_cast<char>(config.manifest_kind));
  PutVarint(out, config.max_inline_value_bytes);
  PutVarint(out, config.max_decoded_node_bytes);
  out.push_back(static_cast<char>(config.version_tree_arity_log2));
  PutVarint(out, config.zstd ? 1 : 0);
  if (config.zstd) PutLittleEndian(out, static_cast<uint32_t>(config.zstd_level), 4);
}

// A version-leaf entry array (manifest inline versions, version-tree leaves).
bool ReadGenerations(Reader& r, const std::vector<DataFileId>& files, uint8_t arity_log2,
                     std::vector<BtreeGeneration>& versions) {
  uint64_t n;
  if (!r.Varint(n, "num_versions")) return false;
  const uint64_t max = uint64_t{1} << arity_log2;
  if (n < 1 || n > max) {
    return r.Fail("num_versions " + std::to_string(n) + " is outside [1, " + std::to_string(max) +
                  "]");
  }
  versions.resize(n);
  for (uint64_t i = 0; i < n; ++i) {
    if (!r.Varint(versions[i].generation, Indexed("generation_number", i))) return false;
  }
  for (uint64_t i = 0; i < n; ++i) {
    if (!r.Byte(versions[i].root_height, Indexed("root_height", i))) return false;
  }
  if (!ReadRefs(
          r, files, n, [&](size_t i) -> DataRef& { return versions[i].root; }, true, "root")) {
    return false;
  }
  if (!ReadStatistics(
          r, n, [&](size_t i) -> Statistics& { return versions[i].statistics; }, "root")) {
    return false;
  }
  for (uint64_t i = 0; i < n; ++i) {
    if (!r.LittleEndian(versions[i].commit_time, 8, Indexed("commit_time", i))) return false;
  }
  for (uint64_t i = 0; i < n; ++i) {
    const BtreeGeneration& v = versions[i];
    if (v.generation == 0) return r.Fail(Indexed("generation_number", i) + " is 0");
    if (i > 0 && v.generation <= versions[i - 1].generation) {
      return r.Fail(Indexed("generation_number", i) + " = " + std::to_string(v.generation) +
                    " does not exceed " + Indexed("generation_number", i - 1) + " = " +
                    std::to_string(versions[i - 1].generation));
    }
    if (v.root.IsMissing() && (v.root_height != 0 || !(v.statistics == Statistics{}))) {
      return r.Fail("empty generation " + std::to_string(v.generation) +
                    " has a root height or statistics");
    }
  }
  // All entries lie in the last group of 2^arity generations.
  const uint64_t last = versions.back().generation;
  const uint64_t min = last - (last - 1) % max;
  if (versions.front().generation < min) {
    return r.Fail("generations [" + std::to_string(versions.front().generation) + ", " +
                  std::to_string(last) + "] span more than one group of " + std::to_string(max));
  }
  return true;
}

void PutGenerations(std::string& out, const TableBuilder& table,
                    const std::vector<BtreeGeneration>& versions) {
  const size_t n = versions.size();
  PutVarint(out, n);
  for (const BtreeGeneration& v : versions) PutVarint(out, v.generation);
  for (const BtreeGeneration& v : versions) out.push_back(static_cast<char>(v.root_height));
  PutRefs(out, table, n, [&](size_t i) -> const DataRef& { return versions[i].root; });
  PutStatistics(out, n, [&](size_t i) -> const Statistics& { return versions[i].statistics; });
  for (const BtreeGeneration& v : versions) PutLittleEndian(out, v.commit_time, 8);
}

int MaxVersionTreeHeight(uint8_t arity_log2) { return 63 / arity_log2 - 1; }

// A version-interior entry array; `with_height` in a manifest only.
bool ReadVersionNodeRefs(Reader& r, const std::vector<DataFileId>& files, uint64_t max,
                         bool with_height, std::vector<VersionNodeRef>& refs) {
  uint64_t n;
  if (!r.Varint(n, "num_version_nodes")) return false;
  if (n > max) {
    return r.Fail("num_version_nodes " + std::to_string(n) + " exceeds the limit of " +
                  std::to_string(max));
  }
  refs.resize(n);
  for (uint64_t i = 0; i < n; ++i) {
    if (!r.Varint(refs[i].generation, Indexed("version_node.generation_number", i))) return false;
  }
  if (!ReadRefs(
          r, files, n, [&](size_t i) -> DataRef& { return refs[i].location; }, false,
          "version_node")) {
    return false;
  }
  for (uint64_t i = 0; i < n; ++i) {
    if (!r.Varint(refs[i].num_generations, Indexed("version_node.num_generations", i))) {
      return false;
    }
  }
  for (uint64_t i = 0; i < n; ++i) {
    if (!r.LittleEndian(refs[i].commit_time, 8, Indexed("version_node.commit_time", i))) {
      return false;
    }
  }
  if (with_height) {
    for (uint64_t i = 0; i < n; ++i) {
      if (!r.Byte(refs[i].height, Indexed("version_node.height", i))) return false;
    }
  }
  return true;
}

// ValidateManifestVersionTreeNodes: heights in [1, max] strictly
// decreasing, generations increasing, each inside the range its height
// covers before `last_generation`.
bool ValidateManifestVersionNodes(Reader& r, uint8_t arity_log2, uint64_t last_generation,
                                  const std::vector<VersionNodeRef>& refs) {
  const int max_height = MaxVersionTreeHeight(arity_log2);
  for (size_t i = 0; i < refs.size(); ++i) {
    const VersionNodeRef& ref = refs[i];
    if (ref.height == 0 || ref.height > max_height) {
      return r.Fail(Indexed("version_node.height", i) + " = " + std::to_string(ref.height) +
                    " is outside [1, " + std::to_string(max_height) + "]");
    }
    if (ref.generation == 0) return r.Fail(Indexed("version_node.generation_number", i) + " is 0");
    if (i > 0 && (ref.generation <= refs[i - 1].generation || ref.height >= refs[i - 1].height)) {
      return r.Fail(Indexed("version_node", i) +
                    " does not follow the previous one (generations must increase and heights "
                    "decrease)");
    }
  }
  // The range of generations each height may cover (manifest.cc:
  // ForEachManifestVersionTreeNodeRef), matched from the lowest height up.
  size_t i = refs.size();
  uint64_t generation = ((last_generation - 1) >> arity_log2) << arity_log2;
  for (int height = 1; generation != 0 && height <= max_height; ++height) {
    const int shift = (height + 1) * arity_log2;
    const uint64_t next = shift >= 64 ? 0 : ((generation - 1) >> shift) << shift;
    if (i > 0 && refs[i - 1].height == height) {
      --i;
      if (refs[i].generation < next + 1 || refs[i].generation > generation) {
        return r.Fail(Indexed("version_node.generation_number", i) + " = " +
                      std::to_string(refs[i].generation) + " is outside [" +
                      std::to_string(next + 1) + ", " + std::to_string(generation) +
                      "] for height " + std::to_string(height));
      }
    }
    generation = next;
  }
  if (i != 0) {
    return r.Fail(Indexed("version_node", i - 1) + " (generation " +
                  std::to_string(refs[i - 1].generation) + ", height " +
                  std::to_string(refs[i - 1].height) + ") does not fit last generation " +
                  std::to_string(last_generation));
  }
  return true;
}

// ---------------------------------------------------------------------------
// Tree building.

template <typename Entry>
uint64_t EstimateSize(const Entry& entry);
template <>
uint64_t EstimateSize<LeafEntry>(const LeafEntry& entry) {
  return EstimateLeafEntrySize(entry);
}
template <>
uint64_t EstimateSize<InteriorEntry>(const InteriorEntry& entry) {
  return EstimateInteriorEntrySize(entry);
}

uint64_t CeilOfRatio(uint64_t a, uint64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

// One node of entries [begin, end) at `height`.
template <typename Entry>
Result<EncodedNode> EncodeNode(const Config& config, uint8_t height,
                               const std::vector<Entry>& entries, size_t begin, size_t end,
                               bool is_root) {
  EncodedNode result;
  const Entry& first = entries[begin];
  const Entry& last = entries[end - 1];
  uint64_t max_excluded = is_root ? 0 : kMaxKeyLength;
  if constexpr (std::is_same_v<Entry, InteriorEntry>) {
    for (size_t i = begin; i < end; ++i) {
      max_excluded = std::min<uint64_t>(max_excluded, entries[i].subtree_common_prefix_length);
    }
  }
  if (!is_root) result.inclusive_min_key = first.key;
  result.excluded_prefix_length = max_excluded == 0
                                      ? 0
                                      : static_cast<uint32_t>(std::min<uint64_t>(
                                            max_excluded, CommonPrefixLength(first.key, last.key)));
  const size_t excluded = result.excluded_prefix_length;

  BtreeNode node;
  node.height = height;
  for (size_t i = begin; i < end; ++i) {
    Entry stored = entries[i];
    stored.key.erase(0, excluded);
    if constexpr (std::is_same_v<Entry, LeafEntry>) {
      ++result.statistics.num_keys;
      if (stored.out_of_line) result.statistics.num_indirect_value_bytes += stored.ref.length;
      node.leaves.push_back(std::move(stored));
    } else {
      result.statistics += stored.statistics;
      stored.subtree_common_prefix_length -= static_cast<uint32_t>(excluded);
      node.children.push_back(std::move(stored));
    }
  }
  CKB_ASSIGN_OR_RETURN(std::string body, EncodeBtreeNodeBody(node));
  CKB_ASSIGN_OR_RETURN(result.encoded, EncodeEnvelope(kBtreeNodeMagic, body, config));
  result.statistics.num_tree_bytes += result.encoded.size();
  return result;
}

// BtreeNodeEncoder<Entry>::Finalize.
template <typename Entry>
Result<std::vector<EncodedNode>> EncodeNodes(const Config& config, uint8_t height,
                                             const std::vector<Entry>& entries, bool may_be_root) {
  constexpr size_t kMinArity = std::is_same_v<Entry, LeafEntry> ? 1 : 2;
  const size_t n = entries.size();
  std::vector<EncodedNode> nodes;
  if (n == 0) return nodes;
  std::vector<uint64_t> cumulative(n);
  uint64_t common_prefix = entries[0].key.size();
  for (size_t i = 0; i < n; ++i) {
    if (entries[i].key.size() > kMaxKeyLength) {
      return InvalidArgument("ocdbt: key of " + std::to_string(entries[i].key.size()) +
                             " bytes exceeds the limit of " + std::to_string(kMaxKeyLength));
    }
    if (i > 0) {
      if (entries[i - 1].key >= entries[i].key) {
        return Internal("ocdbt: b+tree entries are not sorted and unique");
      }
      common_prefix =
          std::min<uint64_t>(common_prefix, CommonPrefixLength(entries[i - 1].key, entries[i].key));
    }
    cumulative[i] = (i ? cumulative[i - 1] : 0) + EstimateSize(entries[i]);
  }
  size_t start = 0;
  uint64_t previous = 0;
  auto range_size = [&](size_t end) {
    return (cumulative[end - 1] - previous) - (end - start - 1) * common_prefix;
  };
  const uint64_t max_bytes = config.max_decoded_node_bytes;
  while (start < n) {
    const uint64_t upper_bound = range_size(n);
    uint64_t num_nodes = CeilOfRatio(n - start, kMinArity);
    if (max_bytes != 0) num_nodes = std::min(num_nodes, CeilOfRatio(upper_bound, max_bytes));
    const uint64_t target = CeilOfRatio(upper_bound, std::max<uint64_t>(num_nodes, 1));
    size_t end;
    for (end = start + 1; end < n; ++end) {
      const uint64_t size = range_size(end);
      if (size >= target && end >= start + kMinArity) {
        if (size > max_bytes && end > start + kMinArity) --end;
        break;
      }
    }
    CKB_ASSIGN_OR_RETURN(EncodedNode node, EncodeNode(config, height, entries, start, end,
                                                      may_be_root && start == 0 && end == n));
    nodes.push_back(std::move(node));
    start = end;
    previous = cumulative[end - 1];
  }
  return nodes;
}

}  // namespace

// ---------------------------------------------------------------------------
// Small types

Config Config::ForOrbax() {
  Config config;
  std::random_device random;
  for (size_t i = 0; i < config.uuid.size(); i += 4) {
    const uint32_t bits = random();
    for (size_t j = 0; j < 4; ++j) config.uuid[i + j] = static_cast<uint8_t>(bits >> (8 * j));
  }
  return config;
}

DataRef DataRef::Missing() {
  DataRef ref;
  ref.offset = kMissingOffset;
  ref.length = kMissingOffset;
  return ref;
}

bool DataRef::IsMissing() const { return offset == kMissingOffset && length == kMissingOffset; }

Statistics& Statistics::operator+=(const Statistics& other) {
  auto add = [](uint64_t a, uint64_t b) {
    return a > std::numeric_limits<uint64_t>::max() - b ? std::numeric_limits<uint64_t>::max()
                                                        : a + b;
  };
  num_keys = add(num_keys, other.num_keys);
  num_tree_bytes = add(num_tree_bytes, other.num_tree_bytes);
  num_indirect_value_bytes = add(num_indirect_value_bytes, other.num_indirect_value_bytes);
  return *this;
}

std::string NumberedManifestName(uint64_t generation) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "manifest.%016llx",
                static_cast<unsigned long long>(generation));
  return buffer;
}

// ---------------------------------------------------------------------------
// Envelope

Result<std::string> EncodeEnvelope(uint32_t magic, std::string_view body, const Config& config) {
  std::string out;
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>((magic >> (8 * i)) & 0xff));
  out.append(8, '\0');  // the length, filled in below
  PutVarint(out, 0);    // format version
  PutVarint(out, config.zstd ? 1 : 0);
  if (config.zstd) {
    CKB_RETURN_IF_ERROR(ZstdCompressAppend(body, config.zstd_level, out));
  } else {
    out.append(body);
  }
  const uint64_t length = out.size() + 4;
  for (int i = 0; i < 8; ++i) out[4 + i] = static_cast<char>((length >> (8 * i)) & 0xff);
  PutLittleEndian(out, ComputeCrc32c(out.data(), out.size()), 4);
  return out;
}

Result<std::string> DecodeEnvelope(std::string_view encoded, uint32_t magic,
                                   uint64_t max_body_bytes, std::string_view label) {
  const std::string where(label);
  if (encoded.size() < kEnvelopeMinBytes) {
    return DataLoss(where + ": " + std::to_string(encoded.size()) +
                    " bytes, shorter than the smallest envelope (" +
                    std::to_string(kEnvelopeMinBytes) + " bytes)");
  }
  uint32_t got_magic = 0;
  for (int i = 0; i < 4; ++i) got_magic = (got_magic << 8) | static_cast<uint8_t>(encoded[i]);
  if (got_magic != magic) {
    return DataLoss(where + ": magic " + Hex32(got_magic) + ", expected " + Hex32(magic));
  }
  Reader r(encoded.substr(0, encoded.size() - 4));
  std::string_view skipped;
  uint64_t length = 0;
  if (!r.Bytes(4, skipped, "magic") || !r.LittleEndian(length, 8, "length")) {
    return BodyError(label, "envelope", r);
  }
  if (length != encoded.size()) {
    return DataLoss(where + ": the header says " + std::to_string(length) +
                    " bytes, but there are " + std::to_string(encoded.size()));
  }
  uint64_t stored_crc = 0;
  for (int i = 3; i >= 0; --i) {
    stored_crc = (stored_crc << 8) | static_cast<uint8_t>(encoded[encoded.size() - 4 + i]);
  }
  const uint32_t computed = ComputeCrc32c(encoded.data(), encoded.size() - 4);
  if (stored_crc != computed) {
    return DataLoss(where + ": CRC-32C mismatch (stored " +
                    Hex32(static_cast<uint32_t>(stored_crc)) + ", computed " + Hex32(computed) +
                    ")");
  }
  uint64_t version = 0, compression = 0;
  if (!r.BoundedVarint(version, "format version", 0xffffffffu) ||
      !r.BoundedVarint(compression, "compression", 0xffffffffu)) {
    return BodyError(label, "envelope", r);
  }
  if (version != 0) {
    return DataLoss(where + ": format version " + std::to_string(version) + ", expected 0");
  }
  const std::string_view body = encoded.substr(r.pos(), encoded.size() - 4 - r.pos());
  if (compression == 0) {
    if (body.size() > max_body_bytes) {
      return DataLoss(where + ": the body has " + std::to_string(body.size()) +
                      " bytes, more than the limit of " + std::to_string(max_body_bytes));
    }
    return std::string(body);
  }
  if (compression != 1) {
    return DataLoss(where + ": compression " + std::to_string(compression) +
                    " is neither 0 (none) nor 1 (zstd)");
  }
  return ZstdDecompressBounded(body, max_body_bytes, label);
}

// ---------------------------------------------------------------------------
// Manifest

Result<std::string> EncodeManifestBody(const Manifest& manifest) {
  std::string out;
  PutConfig(out, manifest.config);
  if (manifest.config.manifest_kind != ManifestKind::kSingle) return out;
  if (manifest.versions.empty()) return InvalidArgument("ocdbt: manifest without a version");
  TableBuilder table;
  for (const BtreeGeneration& v : manifest.versions) table.Add(v.root.file);
  for (const VersionNodeRef& ref : manifest.version_nodes) table.Add(ref.location.file);
  CKB_RETURN_IF_ERROR(table.Finish(out));
  PutGenerations(out, table, manifest.versions);
  const auto& refs = manifest.version_nodes;
  PutVarint(out, refs.size());
  for (const VersionNodeRef& ref : refs) PutVarint(out, ref.generation);
  PutRefs(out, table, refs.size(), [&](size_t i) -> const DataRef& { return refs[i].location; });
  for (const VersionNodeRef& ref : refs) PutVarint(out, ref.num_generations);
  for (const VersionNodeRef& ref : refs) PutLittleEndian(out, ref.commit_time, 8);
  for (const VersionNodeRef& ref : refs) out.push_back(static_cast<char>(ref.height));
  return out;
}

Result<Manifest> DecodeManifestBody(std::string_view body, std::string_view label) {
  Manifest manifest;
  Reader r(body);
  if (!ReadConfig(r, manifest.config)) return BodyError(label, "manifest config", r);
  if (manifest.config.manifest_kind != ManifestKind::kSingle) {
    if (!r.ExpectEnd("config of a numbered-kind manifest")) {
      return BodyError(label, "manifest", r);
    }
    return manifest;
  }
  std::vector<DataFileId> files;
  const uint8_t arity = manifest.config.version_tree_arity_log2;
  if (!ReadDataFileTable(r, files) || !ReadGenerations(r, files, arity, manifest.versions) ||
      !ReadVersionNodeRefs(r, files, static_cast<uint64_t>(MaxVersionTreeHeight(arity)), true,
                           manifest.version_nodes) ||
      !ValidateManifestVersionNodes(r, arity, manifest.versions.back().generation,
                                    manifest.version_nodes) ||
      !r.ExpectEnd("version nodes")) {
    return BodyError(label, "manifest", r);
  }
  return manifest;
}

// ---------------------------------------------------------------------------
// Version-tree nodes

Result<VersionTreeNode> DecodeVersionTreeNodeBody(std::string_view body, std::string_view label) {
  VersionTreeNode node;
  Reader r(body);
  std::vector<DataFileId> files;
  bool ok = r.Byte(node.arity_log2, "version_tree_arity_log2") && r.Byte(node.height, "height");
  if (ok && (node.arity_log2 < 1 || node.arity_log2 > 16)) {
    ok = r.Fail("version_tree_arity_log2 " + std::to_string(node.arity_log2) +
                " is outside [1, 16]");
  }
  if (ok && node.height > MaxVersionTreeHeight(node.arity_log2)) {
    ok = r.Fail("height " + std::to_string(node.height) + " exceeds the maximum of " +
                std::to_string(MaxVersionTreeHeight(node.arity_log2)));
  }
  ok = ok && ReadDataFileTable(r, files);
  if (ok && node.height == 0) {
    ok = ReadGenerations(r, files, node.arity_log2, node.leaves);
  } else if (ok) {
    const uint64_t max = uint64_t{1} << node.arity_log2;
    ok = ReadVersionNodeRefs(r, files, max, false, node.children);
    if (ok && node.children.empty()) ok = r.Fail("interior version node without children");
    for (size_t i = 0; ok && i < node.children.size(); ++i) {
      node.children[i].height = static_cast<uint8_t>(node.height - 1);
      if (node.children[i].generation == 0 ||
          (i > 0 && node.children[i].generation <= node.children[i - 1].generation)) {
        ok = r.Fail(Indexed("version_node.generation_number", i) + " = " +
                    std::to_string(node.children[i].generation) +
                    " is 0 or does not exceed the previous one");
      }
    }
  }
  if (!ok || !r.ExpectEnd("version tree node")) return BodyError(label, "version tree node", r);
  return node;
}

// ---------------------------------------------------------------------------
// B+tree nodes

Result<std::string> EncodeBtreeNodeBody(const BtreeNode& node) {
  const bool leaf = node.height == 0;
  const size_t n = leaf ? node.leaves.size() : node.children.size();
  if (n == 0 || n > kMaxNodeArity) {
    return InvalidArgument("ocdbt: b+tree node with " + std::to_string(n) + " entries");
  }
  auto key = [&](size_t i) -> const std::string& {
    return leaf ? node.leaves[i].key : node.children[i].key;
  };
  std::string out;
  out.push_back(static_cast<char>(node.height));
  TableBuilder table;
  for (size_t i = 0; i < n; ++i) {
    if (leaf && node.leaves[i].out_of_line) table.Add(node.leaves[i].ref.file);
    if (!leaf) table.Add(node.children[i].child.file);
  }
  CKB_RETURN_IF_ERROR(table.Finish(out));
  PutVarint(out, n);
  std::vector<size_t> prefix(n, 0);
  for (size_t i = 0; i < n; ++i) {
    if (key(i).size() > kMaxKeyLength) {
      return InvalidArgument("ocdbt: key of " + std::to_string(key(i).size()) +
                             " bytes exceeds the limit of " + std::to_string(kMaxKeyLength));
    }
    if (i > 0) {
      prefix[i] = CommonPrefixLength(key(i - 1), key(i));
      PutVarint(out, prefix[i]);
    }
  }
  for (size_t i = 0; i < n; ++i) PutVarint(out, key(i).size() - prefix[i]);
  if (!leaf) {
    for (const InteriorEntry& e : node.children) PutVarint(out, e.subtree_common_prefix_length);
  }
  for (size_t i = 0; i < n; ++i) out.append(key(i), prefix[i]);
  if (leaf) {
    for (const LeafEntry& e : node.leaves) PutVarint(out, e.value_size());
    for (const LeafEntry& e : node.leaves) out.push_back(e.out_of_line ? 1 : 0);
    for (const LeafEntry& e : node.leaves) {
      if (e.out_of_line) PutVarint(out, table.Index(e.ref.file));
    }
    for (const LeafEntry& e : node.leaves) {
      if (e.out_of_line) PutVarint(out, e.ref.offset);
    }
    for (const LeafEntry& e : node.leaves) {
      if (!e.out_of_line) out.append(e.value);
    }
  } else {
    const auto& children = node.children;
    PutRefs(out, table, n, [&](size_t i) -> const DataRef& { return children[i].child; });
    PutStatistics(out, n, [&](size_t i) -> const Statistics& { return children[i].statistics; });
  }
  return out;
}

Result<BtreeNode> DecodeBtreeNodeBody(std::string_view body, std::string_view label) {
  BtreeNode node;
  Reader r(body);
  std::vector<DataFileId> files;
  uint64_t n = 0;
  if (!r.Byte(node.height, "height") || !ReadDataFileTable(r, files) ||
      !r.Varint(n, "num_entries", 32)) {
    return BodyError(label, "b+tree node", r);
  }
  if (n == 0 || n > kMaxNodeArity) {
    return DataLoss(std::string(label) + ": b+tree node: num_entries " + std::to_string(n) +
                    " is outside [1, " + std::to_string(kMaxNodeArity) + "]");
  }
  if (!r.CheckCount(n, "entry")) return BodyError(label, "b+tree node", r);
  const bool leaf = node.height == 0;
  std::vector<uint64_t> prefix(n, 0), suffix(n), subtree(leaf ? 0 : n);
  bool ok = true;
  for (uint64_t i = 1; ok && i < n; ++i) {
    ok = r.BoundedVarint(prefix[i], Indexed("key_prefix_length", i), kMaxKeyLength);
  }
  for (uint64_t i = 0; ok && i < n; ++i) {
    ok = r.BoundedVarint(suffix[i], Indexed("key_suffix_length", i), kMaxKeyLength);
  }
  for (uint64_t i = 0; ok && i < subtree.size(); ++i) {
    ok = r.BoundedVarint(subtree[i], Indexed("subtree_common_prefix_length", i), kMaxKeyLength);
  }
  if (!ok) return BodyError(label, "b+tree node", r);
  if (leaf) {
    node.leaves.resize(n);
  } else {
    node.children.resize(n);
  }
  auto key = [&](uint64_t i) -> std::string& {
    return leaf ? node.leaves[i].key : node.children[i].key;
  };
  uint64_t total_key_bytes = 0;
  for (uint64_t i = 0; ok && i < n; ++i) {
    const size_t previous_length = i ? key(i - 1).size() : 0;
    const uint64_t length = prefix[i] + suffix[i];
    total_key_bytes += length;
    if (total_key_bytes > kMaxNodeKeyBytes) {
      // Each key may repeat up to 64 KiB of its predecessor for a few bytes
      // of body: 2^20 such keys would decode to 64 GiB.
      ok = r.Fail("the keys up to " + Indexed("key", i) + " add up to more than " +
                  std::to_string(kMaxNodeKeyBytes) + " bytes");
    } else if (prefix[i] > previous_length) {
      ok = r.Fail(Indexed("key_prefix_length", i) + " = " + std::to_string(prefix[i]) +
                  " exceeds the previous key's length " + std::to_string(previous_length));
    } else if (length > kMaxKeyLength) {
      ok = r.Fail(Indexed("key", i) + " has " + std::to_string(length) +
                  " bytes, more than the limit of " + std::to_string(kMaxKeyLength));
    } else if (!leaf && subtree[i] > length) {
      ok = r.Fail(Indexed("subtree_common_prefix_length", i) + " = " + std::to_string(subtree[i]) +
                  " exceeds the key's length " + std::to_string(length));
    }
    std::string_view bytes;
    ok = ok && r.Bytes(suffix[i], bytes, Indexed("key_suffix", i));
    if (!ok) break;
    std::string& k = key(i);
    if (i > 0) k.assign(key(i - 1), 0, prefix[i]);
    k.append(bytes);
    if (i > 0 && !(key(i - 1) < k)) {
      ok = r.Fail(Indexed("key", i) + " does not sort after " + Indexed("key", i - 1) +
                  " (keys must be strictly increasing)");
    }
    if (!leaf) node.children[i].subtree_common_prefix_length = static_cast<uint32_t>(subtree[i]);
  }
  if (!ok) return BodyError(label, "b+tree node", r);

  if (leaf) {
    std::vector<uint64_t> lengths(n);
    for (uint64_t i = 0; ok && i < n; ++i) ok = r.Varint(lengths[i], Indexed("value_length", i));
    for (uint64_t i = 0; ok && i < n; ++i) {
      uint8_t kind = 0;
      ok = r.Byte(kind, Indexed("value_kind", i));
      if (ok && kind > 1) {
        ok = r.Fail(Indexed("value_kind", i) + " = " + std::to_string(kind) + " is not 0 or 1");
      }
      if (ok && kind == 0 && lengths[i] > kMaxInlineValueLength) {
        ok = r.Fail(Indexed("value_length", i) + " = " + std::to_string(lengths[i]) +
                    " exceeds the " + std::to_string(kMaxInlineValueLength) +
                    "-byte limit for an inline value");
      }
      if (ok) {
        node.leaves[i].out_of_line = kind == 1;
        node.leaves[i].ref.length = kind == 1 ? lengths[i] : 0;
      }
    }
    for (uint64_t i = 0; ok && i < n; ++i) {
      if (node.leaves[i].out_of_line) {
        ok = ReadFileIndex(r, files, node.leaves[i].ref.file, Indexed("data_file_id", i));
      }
    }
    for (uint64_t i = 0; ok && i < n; ++i) {
      LeafEntry& e = node.leaves[i];
      if (!e.out_of_line) continue;
      ok = r.Varint(e.ref.offset, Indexed("data_file_offset", i));
      if (ok && e.ref.offset > kMissingOffset - e.ref.length) {
        ok = r.Fail(Indexed("value", i) + ": offset " + std::to_string(e.ref.offset) +
                    " + length " + std::to_string(e.ref.length) + " overflows");
      }
    }
    for (uint64_t i = 0; ok && i < n; ++i) {
      LeafEntry& e = node.leaves[i];
      if (e.out_of_line) continue;
      std::string_view bytes;
      ok = r.Bytes(lengths[i], bytes, Indexed("inline value", i));
      if (ok) e.value.assign(bytes);
    }
  } else {
    auto& children = node.children;
    ok =
        ReadRefs(
            r, files, n, [&](size_t i) -> DataRef& { return children[i].child; }, false, "child") &&
        ReadStatistics(
            r, n, [&](size_t i) -> Statistics& { return children[i].statistics; }, "child");
  }
  if (!ok || !r.ExpectEnd("entries")) return BodyError(label, "b+tree node", r);
  return node;
}

// ---------------------------------------------------------------------------
// Tree building

uint64_t EstimateLeafEntrySize(const LeafEntry& entry) {
  const uint64_t value =
      entry.out_of_line ? 16 + entry.ref.file.base_path.size() + entry.ref.file.relative_path.size()
                        : entry.value.size();
  return 16 + entry.key.size() + value;
}

uint64_t EstimateInteriorEntrySize(const InteriorEntry& entry) {
  return 56 + entry.key.size() + entry.child.file.base_path.size() +
         entry.child.file.relative_path.size();
}

Result<std::vector<EncodedNode>> EncodeLeafNodes(const Config& config,
                                                 const std::vector<LeafEntry>& entries,
                                                 bool may_be_root) {
  return EncodeNodes(config, 0, entries, may_be_root);
}

Result<std::vector<EncodedNode>> EncodeInteriorNodes(const Config& config, uint8_t height,
                                                     const std::vector<InteriorEntry>& entries,
                                                     bool may_be_root) {
  if (height == 0) return InvalidArgument("ocdbt: an interior node needs a height above 0");
  return EncodeNodes(config, height, entries, may_be_root);
}

}  // namespace ckptbridge::orbax::ocdbt
