// host/engine/staging.h - writing an output so that it appears complete or
// not at all.
//
// Everything is written into a sibling directory `<dst>.tmp-ckptbridge-<hex>`
// and renamed to `<dst>` only after every file is written and flushed. An
// existing destination is refused unless `overwrite` is set; then it is
// replaced only at commit time, so a failed run leaves the previous output
// untouched. A StagedOutput destroyed without Commit() removes its staging
// directory.
#ifndef CKPTBRIDGE_HOST_ENGINE_STAGING_H_
#define CKPTBRIDGE_HOST_ENGINE_STAGING_H_

#include <filesystem>
#include <vector>

#include "host/base/status.h"

namespace ckptbridge::engine {

class StagedOutput {
 public:
  // Checks `destination` (absent, or `overwrite`) and creates the staging
  // directory next to it.
  static Result<StagedOutput> Begin(const std::filesystem::path& destination, bool overwrite);

  StagedOutput(StagedOutput&& other) noexcept;
  StagedOutput& operator=(StagedOutput&&) = delete;
  StagedOutput(const StagedOutput&) = delete;
  ~StagedOutput();

  // Where to write.
  const std::filesystem::path& staging() const { return staging_; }
  const std::filesystem::path& destination() const { return destination_; }

  // Flushes the staged files to disk and renames them into place.
  Status Commit();

  // Removes the staging directory now (also done by the destructor).
  void Abandon();

 private:
  StagedOutput() = default;
  std::filesystem::path destination_;
  std::filesystem::path staging_;
  bool overwrite_ = false;
  bool active_ = false;
};

// The staging directories of interrupted earlier runs next to `destination`.
std::vector<std::filesystem::path> LeftoverStagingDirs(const std::filesystem::path& destination);

}  // namespace ckptbridge::engine

#endif  // CKPTBRIDGE_HOST_ENGINE_STAGING_H_
