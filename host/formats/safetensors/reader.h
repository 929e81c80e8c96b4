// host/formats/safetensors/reader.h - reading Hugging Face safetensors
// checkpoints without loading them.
//
// A safetensors file is an 8-byte little-endian header length N, N bytes of
// JSON ({"name": {"dtype", "shape", "data_offsets": [begin, end)}, ...,
// optional "__metadata__": {string: string}}) and the data section. Files are
// memory-mapped; a tensor's bytes are only touched when its data is read.
//
// Every header is validated before any tensor is used (the checks of the
// reference implementation, plus ours):
//   - N <= 100,000,000 and 8 + N <= file size; the JSON parses, is an object
//     and starts with '{' (trailing spaces allowed);
//   - no duplicate keys; `__metadata__`, when present, maps strings to strings;
//   - every entry has a known dtype, a shape of non-negative ints whose
//     element count times the dtype size does not overflow, and
//     `data_offsets` [begin, end) with begin <= end and
//     end - begin == numel * dtype size;
//   - sorted by begin, the tensors start at 0, are contiguous (no holes, no
//     overlap) and the last one ends exactly at the end of the file.
// Errors name the file, the tensor and both sides of a mismatch and are
// InvalidArgument (exit code 2).
//
// Data may be unaligned (MLX writes headers of any length): Data() returns a
// byte pointer, and readers copy or convert with memcpy-based loads.
//
// A checkpoint folder is opened with OpenCheckpoint():
//   - with `model.safetensors.index.json`: the shards named in its weight_map,
//     cross-checked against the shard headers (a listed tensor missing from
//     its shard is an error; a shard tensor the index does not list is
//     ignored with a warning, as transformers ignores it); shard names must be
//     plain file names inside the folder (no '/', no '..');
//   - otherwise `model.safetensors` if present, else every `*.safetensors`
//     file in the folder (sorted), a tensor name appearing twice is an error;
//   - a path to a single .safetensors file opens just that file.
// A file of a folder that is a symlink to somewhere outside the folder is
// refused (InvalidArgument), except the Hugging Face cache's links from
// <repo>/snapshots/<revision>/ into <repo>/blobs/.
#ifndef CKPTBRIDGE_HOST_FORMATS_SAFETENSORS_READER_H_
#define CKPTBRIDGE_HOST_FORMATS_SAFETENSORS_READER_H_

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "host/base/dtype.h"
#include "host/base/file.h"
#include "host/base/shape.h"
#include "host/base/status.h"

namespace ckptbridge::safetensors {

// The largest header the reference implementation accepts.
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kInvalid;
  Shape shape;
  uint64_t begin = 0;  // relative to the data section
  uint64_t end = 0;
  uint64_t num_bytes() const { return end - begin; }
};

// A parsed and validated header.
struct Header {
  std::vector<TensorInfo> tensors;              // sorted by name
  std::map<std::string, std::string> metadata;  // __metadata__
  uint64_t header_bytes = 0;                    // N
  uint64_t data_bytes = 0;                      // size of the data section
};

// Parses and validates header JSON `json` for a data section of `data_bytes`
// bytes. `label` (usually the file name) starts every error message. This is
// the whole validation logic, usable without a file (tests, fuzzing).
Result<Header> ParseHeader(std::string_view json, uint64_t data_bytes, std::string_view label);

// One memory-mapped .safetensors file.
class File {
 public:
  static Result<File> Open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return mapped_.path(); }
  const Header& header() const { return header_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  // nullptr when the file has no such tensor.
  const TensorInfo* Find(std::string_view name) const;
  // Offset of the data section in the file (8 + N); not necessarily aligned.
  uint64_t data_offset() const { return 8 + header_.header_bytes; }
  // The tensor's bytes (possibly unaligned), valid while the File lives.
  const uint8_t* Data(const TensorInfo& tensor) const {
    return mapped_.data() + data_offset() + tensor.begin;
  }
  // Hints the kernel to read the tensor's pages ahead.
  void Prefetch(const TensorInfo& tensor) const;
  // Drops the tensor's pages from this process's resident set once it has
  // been read (they are read again if touched). Data() stays valid.
  void Release(const TensorInfo& tensor) const;

 private:
  MappedFile mapped_;
  Header header_;
};

// A tensor of a checkpoint: its header entry and the file that holds it.
struct CheckpointTensor {
  const TensorInfo* info = nullptr;
  const File* file = nullptr;
};

// The safetensors files of one checkpoint folder, with one name space.
class Checkpoint {
 public:
  static Result<std::unique_ptr<Checkpoint>> Open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  // Every tensor, sorted by name.
  const std::vector<CheckpointTensor>& tensors() const { return tensors_; }
  const CheckpointTensor* Find(std::string_view name) const;
  const std::vector<std::unique_ptr<File>>& files() const { return files_; }
  // Whether the tensors were found through model.safetensors.index.json.
  bool has_index() const { return has_index_; }
  // Sum of all tensor bytes.
  uint64_t total_bytes() const { return total_bytes_; }
  // Things that are odd but not fatal (unlisted shard tensors, a total_size
  // that disagrees with the tensors), one line each.
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  std::filesystem::path path_;
  std::vector<std::unique_ptr<File>> files_;
  std::vector<CheckpointTensor> tensors_;
  bool has_index_ = false;
  uint64_t total_bytes_ = 0;
  std::vector<std::string> warnings_;
};

}  // namespace ckptbridge::safetensors

#endif  // CKPTBRIDGE_HOST_FORMATS_SAFETENSORS_READER_H_
