// host/base/file.h - the few file operations the host needs, with errors that
// name the path.
//
// MappedFile maps a whole file read-only (safetensors shards are read through
// it, so tensors stay on disk until touched). OutputFile writes at explicit
// offsets (pwrite), so several threads can fill one preallocated file.
#ifndef CKPTBRIDGE_HOST_BASE_FILE_H_
#define CKPTBRIDGE_HOST_BASE_FILE_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "host/base/status.h"

namespace ckptbridge {

namespace fs = std::filesystem;

// A read-only memory map of a whole file. Move-only; unmaps on destruction.
// An empty file maps to (nullptr, 0).
class MappedFile {
 public:
  static Result<MappedFile> Open(const fs::path& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const fs::path& path() const { return path_; }

  // Tells the kernel we will read [offset, offset+length) soon (MADV_WILLNEED).
  void WillNeed(size_t offset, size_t length) const;
  // Tells the kernel we are done with [offset, offset+length) (MADV_DONTNEED):
  // the pages leave this process's resident set (they stay in the page cache
  // and are read again if touched), so reading a whole model through the map
  // does not grow the RSS with the model.
  void DontNeed(size_t offset, size_t length) const;

 private:
  fs::path path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// The whole content of a file.
Result<std::string> ReadFile(const fs::path& path);

// Creates or truncates `path` and writes `content`.
Status WriteFile(const fs::path& path, std::string_view content);

// A file opened for writing at offsets. Move-only; closes on destruction
// (use Close() to see errors).
class OutputFile {
 public:
  // Creates (truncating) `path`; if `size` > 0 the file is extended to it
  // up front so that concurrent PWrite calls fill a file of known length.
  static Result<OutputFile> Create(const fs::path& path, uint64_t size = 0);

  OutputFile() = default;
  OutputFile(OutputFile&& other) noexcept;
  OutputFile& operator=(OutputFile&& other) noexcept;
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  ~OutputFile();

  // Writes all of [data, data+n) at `offset`. Thread-safe.
  Status PWrite(uint64_t offset, const void* data, size_t n) const;
  // Closes the file (no sync: see SyncFilesystemOf).
  Status Close();

  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  int fd_ = -1;
};

// Flushes everything written to the file system holding `path` to stable
// storage (syncfs). One call before an atomic rename replaces an fsync per file.
Status SyncFilesystemOf(const fs::path& path);

// Creates `dir` and its parents; fine if it exists.
Status CreateDirectories(const fs::path& dir);

// Total size of the regular files below `dir` (0 when it cannot be read).
uint64_t DirectoryBytes(const fs::path& dir);

// A short random hex string (for temporary names).
std::string RandomHex(size_t chars);

}  // namespace ckptbridge

#endif  // CKPTBRIDGE_HOST_BASE_FILE_H_
