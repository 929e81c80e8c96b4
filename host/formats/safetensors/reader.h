// host/formats/safetensors/reader.h - reading Hugging Face safetensors
// checkpoints without loading them.
//
// A safetensors file is an 8-byte little-endian header length N, N bytes of
// JSON ({"name": {"dtype", "shape", "data_offsets": [begin, end)}, ...,
// optional "__metadata__": {string: string}}) and the data section. Files are
// kept open and only the header is read up front; a tensor's bytes are mapped
// (only the pages asked for) when they are read.
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

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
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

// Bytes [offset, offset + size) of one tensor, readable while the view lives
// (it does not depend on its File). The view maps only the pages that hold
// its bytes, and dropping it unmaps them: they leave the process's address
// space and resident set (they stay in the page cache), so a reader that
// keeps one view per slice holds only the slices in flight, even under an
// address-space limit (`ulimit -v`) smaller than a shard. Possibly
// unaligned. data() is never null, also for an empty view. Move-only.
class TensorBytes {
 public:
  TensorBytes() = default;
  TensorBytes(TensorBytes&&) noexcept = default;
  TensorBytes& operator=(TensorBytes&&) noexcept = default;
  TensorBytes(const TensorBytes&) = delete;
  TensorBytes& operator=(const TensorBytes&) = delete;

  const uint8_t* data() const { return region_.data(); }
  uint64_t size() const { return region_.size(); }

 private:
  friend class File;
  MappedRegion region_;
};

// One .safetensors file, kept open. Opening reads and validates the header
// only; tensor bytes are read through ReadRange (a mapping of just those
// bytes) or Data() (a mapping of the whole file, made on first use).
// Thread-safe: every method is const and may be called concurrently.
class File {
 public:
  static Result<File> Open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_.path(); }
  const Header& header() const { return header_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  // nullptr when the file has no such tensor.
  const TensorInfo* Find(std::string_view name) const;
  // Offset of the data section in the file (8 + N); not necessarily aligned.
  uint64_t data_offset() const { return 8 + header_.header_bytes; }
  // Bytes [offset, offset + length) of `tensor`, mapped for as long as the
  // returned view lives. Errors: Internal when the range lies outside the
  // tensor; ResourceExhausted when the process lacks the address space.
  // This is how the conversion engine reads: its address space grows with
  // the slices in flight, not with the shards.
  Result<TensorBytes> ReadRange(const TensorInfo& tensor, uint64_t offset, uint64_t length) const;
  // The tensor's bytes (possibly unaligned), valid while the File lives. The
  // first call maps the whole file, which takes address space for all of it:
  // for inspect, verify and tests, not for code that must run under
  // `ulimit -v`. Failing to map it is fatal (the process prints why and
  // aborts): use ReadRange where that must be an error.
  const uint8_t* Data(const TensorInfo& tensor) const;
  // Hints the kernel to read the tensor's pages ahead (into the page cache;
  // maps nothing).
  void Prefetch(const TensorInfo& tensor) const;
  // The same for bytes [offset, offset + length) of the tensor only (the
  // slice a conversion unit reads next).
  void Prefetch(const TensorInfo& tensor, uint64_t offset, uint64_t length) const;
  // Drops the tensor's pages of the whole-file mapping (Data()) from this
  // process's resident set once it has been read (they are read again if
  // touched). Data() stays valid. Views from ReadRange release their pages
  // themselves.
  void Release(const TensorInfo& tensor) const;

 private:
  // The whole-file mapping, made once on first use by Data().
  struct WholeMap {
    std::once_flag once;
    MappedRegion region;
    std::atomic<bool> mapped{false};  // region is set (Release may use it)
  };

  const MappedRegion& Whole() const;

  ReadOnlyFile file_;
  Header header_;
  std::unique_ptr<WholeMap> whole_ = std::make_unique<WholeMap>();
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
