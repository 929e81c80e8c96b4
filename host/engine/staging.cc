#include "host/engine/staging.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <system_error>

#include "host/base/file.h"

namespace ckptbridge::engine {
namespace {

constexpr std::string_view kHfInfix = ".tmp-ckptbridge-";
constexpr std::string_view kOrbaxInfix = ".orbax-checkpoint-tmp-";

Status SyncDirectory(const std::filesystem::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(dir.string(), errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoError(dir.string(), err);
  return Status::Ok();
}

}  // namespace

bool IsStagingName(std::string_view name) {
  return name.find(kHfInfix) != std::string_view::npos ||
         name.find(".orbax-checkpoint-tmp") != std::string_view::npos;
}

namespace {

// The absolute destination, after checking that it may be written.
Result<std::filesystem::path> CheckDestination(const std::filesystem::path& destination,
                                               bool overwrite) {
  std::error_code ec;
  const std::filesystem::path dst = std::filesystem::absolute(destination, ec).lexically_normal();
  if (ec) return ErrnoError(destination.string(), ec.value());
  if (dst.filename().empty()) {
    return InvalidArgument(destination.string() + ": not a usable destination path");
  }
  if (std::filesystem::exists(std::filesystem::symlink_status(dst))) {
    if (!overwrite) {
      return FailedPrecondition(destination.string() +
                                ": already exists; pass --overwrite to replace it");
    }
    if (!std::filesystem::is_directory(dst)) {
      return FailedPrecondition(destination.string() +
                                ": exists and is not a directory; refusing to replace it");
    }
  }
  const std::filesystem::path parent = dst.parent_path();
  if (!std::filesystem::is_directory(parent)) {
    CKB_RETURN_IF_ERROR(CreateDirectories(parent));
  }
  return dst;
}

}  // namespace

Result<StagedOutput> StagedOutput::Begin(const std::filesystem::path& destination, bool overwrite,
                                         Kind kind) {
  CKB_ASSIGN_OR_RETURN(const std::filesystem::path dst, CheckDestination(destination, overwrite));
  const std::filesystem::path parent = dst.parent_path();
  std::error_code ec;
  StagedOutput out;
  out.destination_ = dst;
  out.overwrite_ = overwrite;
  const std::string_view infix = kind == Kind::kOrbax ? kOrbaxInfix : kHfInfix;
  out.staging_ = parent / (dst.filename().string() + std::string(infix) + RandomHex(8));
  std::filesystem::create_directory(out.staging_, ec);
  if (ec) return ErrnoError(out.staging_.string(), ec.value());
  out.active_ = true;
  return out;
}

Result<StagedOutput> StagedOutput::Resume(const std::filesystem::path& staging,
                                          const std::filesystem::path& destination,
                                          bool overwrite) {
  CKB_ASSIGN_OR_RETURN(const std::filesystem::path dst, CheckDestination(destination, overwrite));
  std::error_code ec;
  if (!std::filesystem::is_directory(staging, ec)) {
    return NotFound(staging.string() + ": no such staging directory");
  }
  StagedOutput out;
  out.destination_ = dst;
  out.overwrite_ = overwrite;
  out.staging_ = std::filesystem::absolute(staging, ec).lexically_normal();
  out.active_ = true;
  return out;
}

StagedOutput::StagedOutput(StagedOutput&& other) noexcept
    : destination_(std::move(other.destination_)),
      staging_(std::move(other.staging_)),
      overwrite_(other.overwrite_),
      active_(std::exchange(other.active_, false)) {}

StagedOutput::~StagedOutput() { Abandon(); }

void StagedOutput::Abandon() {
  if (!active_) return;
  active_ = false;
  std::error_code ec;
  std::filesystem::remove_all(staging_, ec);
}

Status StagedOutput::Commit() {
  if (!active_) return Internal("staged output already committed or abandoned");
  std::error_code ec;
  std::filesystem::remove(staging_ / kJournalFileName, ec);
  if (ec) return ErrnoError((staging_ / kJournalFileName).string(), ec.value());
  CKB_RETURN_IF_ERROR(SyncFilesystemOf(staging_));
  std::filesystem::path old;
  if (std::filesystem::exists(std::filesystem::symlink_status(destination_))) {
    if (!overwrite_) {
      return FailedPrecondition(destination_.string() +
                                ": appeared while converting; pass --overwrite to replace it");
    }
    old = destination_.parent_path() /
          (destination_.filename().string() + ".old-ckptbridge-" + RandomHex(8));
    std::filesystem::rename(destination_, old, ec);
    if (ec) return ErrnoError(destination_.string(), ec.value());
  }
  std::filesystem::rename(staging_, destination_, ec);
  if (ec) {
    Status status = ErrnoError(destination_.string(), ec.value());
    if (!old.empty()) std::filesystem::rename(old, destination_, ec);  // put it back
    return status;
  }
  active_ = false;
  if (!old.empty()) std::filesystem::remove_all(old, ec);
  return SyncDirectory(destination_.parent_path());
}

std::vector<std::filesystem::path> LeftoverStagingDirs(const std::filesystem::path& destination) {
  std::vector<std::filesystem::path> found;
  std::error_code ec;
  const std::filesystem::path dst = std::filesystem::absolute(destination, ec).lexically_normal();
  const std::string name = dst.filename().string();
  for (const auto& entry : std::filesystem::directory_iterator(dst.parent_path(), ec)) {
    const std::string candidate = entry.path().filename().string();
    if (candidate.rfind(name, 0) != 0) continue;
    // `<name><infix>...` only: "out2.tmp-ckptbridge-..." belongs to out2.
    const std::string rest = candidate.substr(name.size());
    if (rest.rfind(kHfInfix, 0) == 0 || rest.rfind(".orbax-checkpoint-tmp", 0) == 0) {
      found.push_back(entry.path());
    }
  }
  return found;
}

std::vector<std::filesystem::path> LeftoverStagingDirs(const std::filesystem::path& destination,
                                                       StagedOutput::Kind kind) {
  const std::string_view infix = kind == StagedOutput::Kind::kOrbax ? kOrbaxInfix : kHfInfix;
  std::error_code ec;
  const std::string name =
      std::filesystem::absolute(destination, ec).lexically_normal().filename().string();
  std::vector<std::filesystem::path> found;
  for (const std::filesystem::path& dir : LeftoverStagingDirs(destination)) {
    const std::string rest = dir.filename().string().substr(name.size());
    if (rest.rfind(infix, 0) == 0 && std::filesystem::is_directory(dir, ec)) found.push_back(dir);
  }
  std::sort(found.begin(), found.end());
  return found;
}

}  // namespace ckptbridge::engine
