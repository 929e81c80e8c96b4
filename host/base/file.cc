#include "host/base/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <system_error>
#include <utility>

namespace ckptbridge {

namespace {

size_t PageSize() {
  static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

// Raises the soft limit on open files to the hard one; false when it already
// was there (or cannot be raised).
bool RaiseOpenFileLimit() {
  rlimit limit;
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return false;
  limit.rlim_cur = limit.rlim_max;
  return ::setrlimit(RLIMIT_NOFILE, &limit) == 0;
}

}  // namespace

const uint8_t MappedRegion::kEmpty = 0;

MappedRegion::MappedRegion(MappedRegion&& other) noexcept { *this = std::move(other); }

MappedRegion& MappedRegion::operator=(MappedRegion&& other) noexcept {
  if (this != &other) {
    if (base_) ::munmap(base_, mapped_);
    base_ = std::exchange(other.base_, nullptr);
    mapped_ = std::exchange(other.mapped_, 0);
    data_ = std::exchange(other.data_, &kEmpty);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedRegion::~MappedRegion() {
  if (base_) ::munmap(base_, mapped_);
}

void MappedRegion::DontNeed(size_t offset, size_t length) const {
  if (!base_ || offset >= size_) return;
  // Page-align from the mapping's start, where data_ need not be aligned.
  const size_t lead = static_cast<size_t>(data_ - static_cast<const uint8_t*>(base_));
  const size_t start = (lead + offset) / PageSize() * PageSize();
  const size_t end = lead + std::min(size_, offset + length);
  ::madvise(static_cast<uint8_t*>(base_) + start, end - start, MADV_DONTNEED);
}

Result<ReadOnlyFile> ReadOnlyFile::Open(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == EMFILE && RaiseOpenFileLimit()) {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  }
  if (fd < 0) {
    const int err = errno;
    return ErrnoError(path.string(), err);
  }
  ReadOnlyFile file;
  file.path_ = path;
  file.fd_ = fd;  // closed by `file` from here on
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    return ErrnoError(path.string(), err);
  }
  if (!S_ISREG(st.st_mode)) return InvalidArgument(path.string() + ": not a regular file");
  file.size_ = static_cast<uint64_t>(st.st_size);
  return file;
}

ReadOnlyFile::ReadOnlyFile(ReadOnlyFile&& other) noexcept { *this = std::move(other); }

ReadOnlyFile& ReadOnlyFile::operator=(ReadOnlyFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

ReadOnlyFile::~ReadOnlyFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status ReadOnlyFile::PRead(uint64_t offset, void* dst, size_t n) const {
  auto* p = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t got = ::pread(fd_, p, n, static_cast<off_t>(offset));
    if (got < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      return ErrnoError(path_.string(), err);
    }
    if (got == 0) {
      return DataLoss(path_.string() + ": ends at byte " + std::to_string(offset) + ", " +
                      std::to_string(n) + " bytes short of what was read from it (it shrank)");
    }
    p += got;
    offset += static_cast<uint64_t>(got);
    n -= static_cast<size_t>(got);
  }
  return Status::Ok();
}

Result<MappedRegion> ReadOnlyFile::Map(uint64_t offset, uint64_t length,
                                       std::string_view what) const {
  const std::string label = path_.string() + (what.empty() ? "" : ": " + std::string(what));
  if (offset > size_ || length > size_ - offset) {
    return Internal(label + ": mapping bytes [" + std::to_string(offset) + ", " +
                    std::to_string(offset + length) + ") of a " + std::to_string(size_) +
                    "-byte file");
  }
  MappedRegion region;
  if (length == 0) return region;
  const uint64_t start = offset / PageSize() * PageSize();
  const uint64_t lead = offset - start;
  void* p = ::mmap(nullptr, static_cast<size_t>(lead + length), PROT_READ, MAP_SHARED, fd_,
                   static_cast<off_t>(start));
  if (p == MAP_FAILED) {
    const int err = errno;
    const std::string message = label + ": cannot map " + std::to_string(length) +
                                " bytes at offset " + std::to_string(offset);
    if (err == ENOMEM) {
      return ResourceExhausted(message +
                               ": out of address space (a `ulimit -v` / RLIMIT_AS limit, or "
                               "vm.max_map_count); raise it or lower --max-memory and --threads");
    }
    return ErrnoError(message, err);
  }
  region.base_ = p;
  region.mapped_ = static_cast<size_t>(lead + length);
  region.data_ = static_cast<const uint8_t*>(p) + lead;
  region.size_ = static_cast<size_t>(length);
  return region;
}

void ReadOnlyFile::WillNeed(uint64_t offset, uint64_t length) const {
  if (fd_ < 0 || offset >= size_) return;
  ::posix_fadvise(fd_, static_cast<off_t>(offset),
                  static_cast<off_t>(std::min(length, size_ - offset)), POSIX_FADV_WILLNEED);
}

void AdviseWillNeed(const fs::path& path, uint64_t offset, uint64_t length) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::posix_fadvise(fd, static_cast<off_t>(offset), static_cast<off_t>(length), POSIX_FADV_WILLNEED);
  ::close(fd);
}

Result<std::string> ReadFile(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(path.string(), errno);
  std::string content;
  char buffer[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return ErrnoError(path.string(), err);
    }
    if (n == 0) break;
    content.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return content;
}

Status WriteFile(const fs::path& path, std::string_view content) {
  CKB_ASSIGN_OR_RETURN(OutputFile file, OutputFile::Create(path));
  CKB_RETURN_IF_ERROR(file.PWrite(0, content.data(), content.size()));
  return file.Close();
}

Result<OutputFile> OutputFile::Create(const fs::path& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(path.string(), errno);
  OutputFile file;
  file.path_ = path;
  file.fd_ = fd;
  if (size > 0 && ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    return ErrnoError(path.string(), errno);
  }
  return file;
}

Result<OutputFile> OutputFile::Open(const fs::path& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(path.string(), errno);
  OutputFile file;
  file.path_ = path;
  file.fd_ = fd;
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) return ErrnoError(path.string(), errno);
  return file;
}

OutputFile::OutputFile(OutputFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

OutputFile& OutputFile::operator=(OutputFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status OutputFile::PWrite(uint64_t offset, const void* data, size_t n) const {
  const auto* p = static_cast<const char*>(data);
  const uint64_t start = offset;
  const size_t length = n;
  while (n > 0) {
    ssize_t written = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
    if (written < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(path_.string(), errno);
    }
    p += written;
    offset += static_cast<uint64_t>(written);
    n -= static_cast<size_t>(written);
  }
  if (length >= kWritebackBytes) {
    // Start writing these pages to disk now, without waiting for it, so the
    // sync before the output is renamed into place (SyncFilesystemOf) finds
    // little left to do: the disk works while the next units compute. A
    // hint: a failure here changes nothing the sync would not report.
    ::sync_file_range(fd_, static_cast<off_t>(start), static_cast<off_t>(length),
                      SYNC_FILE_RANGE_WRITE);
  }
  return Status::Ok();
}

Status OutputFile::Close() {
  if (fd_ < 0) return Status::Ok();
  int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) return ErrnoError(path_.string(), errno);
  return Status::Ok();
}

Status SyncFilesystemOf(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(path.string(), errno);
  int rc = ::syncfs(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoError(path.string() + ": syncfs", err);
  return Status::Ok();
}

Status CreateDirectories(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return ErrnoError(dir.string(), ec.value());
  return Status::Ok();
}

uint64_t DirectoryBytes(const fs::path& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_regular_file(ec)) total += it->file_size(ec);
  }
  return total;
}

std::string RandomHex(size_t chars) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(chars, '0');
  for (auto& c : s) c = kHex[rng() & 15];
  return s;
}

}  // namespace ckptbridge
