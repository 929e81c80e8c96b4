// host/base/file.h - the few file operations the host needs, with errors that
// name the path.
//
// ReadOnlyFile keeps a file open and maps only the windows asked for
// (MappedRegion): safetensors shards are read through it, so tensors stay on
// disk until touched and a process under an address-space limit never needs
// a whole shard's worth of it. OutputFile writes at explicit offsets
// (pwrite), so several threads can fill one preallocated file.
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

// A window [offset, offset + size) of a file, mapped read-only. The mapping
// itself starts at the page boundary below `offset`, so only the pages of the
// window take address space (which RLIMIT_AS and `ulimit -v` count) and, once
// touched, resident memory. Move-only; unmaps on destruction, which drops
// the pages from this process (they stay in the page cache).
class MappedRegion {
 public:
  MappedRegion() = default;
  MappedRegion(MappedRegion&& other) noexcept;
  MappedRegion& operator=(MappedRegion&& other) noexcept;
  MappedRegion(const MappedRegion&) = delete;
  MappedRegion& operator=(const MappedRegion&) = delete;
  ~MappedRegion();

  // The first byte of the window; never null, also for an empty window, so
  // that it can be passed to memcpy.
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

  // Tells the kernel we are done with [offset, offset+length) of the window
  // (MADV_DONTNEED): the pages leave this process's resident set (they stay
  // in the page cache and are read again if touched).
  void DontNeed(size_t offset, size_t length) const;

 private:
  friend class ReadOnlyFile;
  static const uint8_t kEmpty;
  void* base_ = nullptr;  // page-aligned start of the mapping
  size_t mapped_ = 0;     // bytes mapped from base_
  const uint8_t* data_ = &kEmpty;
  size_t size_ = 0;
};

// A regular file opened read-only and kept open, so that windows of it can be
// read (PRead) or mapped (Map) when needed rather than the whole file up
// front. Move-only; closes on destruction. Thread-safe: every operation reads
// at explicit offsets.
class ReadOnlyFile {
 public:
  // Opens `path`; anything but a regular file is InvalidArgument. When the
  // process is out of file descriptors (EMFILE), the soft RLIMIT_NOFILE is
  // raised to the hard one once and the open retried: a checkpoint of
  // thousands of shards keeps one descriptor per shard.
  static Result<ReadOnlyFile> Open(const fs::path& path);

  ReadOnlyFile() = default;
  ReadOnlyFile(ReadOnlyFile&& other) noexcept;
  ReadOnlyFile& operator=(ReadOnlyFile&& other) noexcept;
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;
  ~ReadOnlyFile();

  // The size when the file was opened.
  uint64_t size() const { return size_; }
  const fs::path& path() const { return path_; }

  // Reads exactly [offset, offset + n) into `dst`. A range past the end of
  // the file (it shrank since it was opened) is DataLoss.
  Status PRead(uint64_t offset, void* dst, size_t n) const;

  // Maps [offset, offset + length), which must lie inside the file (else
  // Internal). When the kernel refuses for lack of address space (ENOMEM:
  // RLIMIT_AS, vm.max_map_count) the error is ResourceExhausted. Errors read
  // "<path>: <what>: cannot map N bytes at offset O: ..." (`what`, e.g. the
  // tensor, may be empty).
  Result<MappedRegion> Map(uint64_t offset, uint64_t length, std::string_view what = {}) const;

  // Hints the kernel to read [offset, offset + length) ahead into the page
  // cache (POSIX_FADV_WILLNEED); maps nothing.
  void WillNeed(uint64_t offset, uint64_t length) const;

 private:
  fs::path path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// The whole content of a file.
Result<std::string> ReadFile(const fs::path& path);

// Hints the kernel to read [offset, offset + length) of the file at `path`
// into the page cache now, without waiting (POSIX_FADV_WILLNEED), so that a
// read soon after finds it there. Best effort: errors are ignored, since
// the read that follows reports them.
void AdviseWillNeed(const fs::path& path, uint64_t offset, uint64_t length);

// Creates or truncates `path` and writes `content`.
Status WriteFile(const fs::path& path, std::string_view content);

// A file opened for writing at offsets. Move-only; closes on destruction
// (use Close() to see errors).
class OutputFile {
 public:
  // Creates (truncating) `path`; if `size` > 0 the file is extended to it
  // up front so that concurrent PWrite calls fill a file of known length.
  static Result<OutputFile> Create(const fs::path& path, uint64_t size = 0);
  // Opens `path` for writing without truncating it (creating it when
  // absent) and sets its length to `size`: what an interrupted run wrote
  // below `size` stays, so a resumed run can continue the file.
  static Result<OutputFile> Open(const fs::path& path, uint64_t size);

  OutputFile() = default;
  OutputFile(OutputFile&& other) noexcept;
  OutputFile& operator=(OutputFile&& other) noexcept;
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  ~OutputFile();

  // Writes all of [data, data+n) at `offset`. Thread-safe. A write of at
  // least kWritebackBytes also starts its write-back to disk (without
  // waiting for it).
  Status PWrite(uint64_t offset, const void* data, size_t n) const;
  static constexpr size_t kWritebackBytes = size_t{1} << 20;
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
