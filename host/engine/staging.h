// host/engine/staging.h - writing an output so that it appears complete or
// not at all.
//
// Everything is written into a sibling directory and renamed to `<dst>` only
// after every file is written and flushed. The sibling is named
// `<dst>.tmp-ckptbridge-<hex>` for HF outputs and
// `<dst>.orbax-checkpoint-tmp-<hex>` for Orbax outputs: Orbax (and ckptbridge)
// refuse to read any path with ".orbax-checkpoint-tmp" in it, so a checkpoint
// left behind by a killed run can never be mistaken for a finished one. An
// existing destination is refused unless `overwrite` is set; then it is
// replaced only at commit time, so a failed run leaves the previous output
// untouched. A StagedOutput destroyed without Commit() removes its staging
// directory.
#ifndef CKPTBRIDGE_HOST_ENGINE_STAGING_H_
#define CKPTBRIDGE_HOST_ENGINE_STAGING_H_

#include <filesystem>
#include <string_view>
#include <vector>

#include "host/base/status.h"

namespace ckptbridge::engine {

class StagedOutput {
 public:
  // Checks `destination` (absent, or `overwrite`) and creates the staging
  // directory next to it.
  enum class Kind { kHuggingFace, kOrbax };
  static Result<StagedOutput> Begin(const std::filesystem::path& destination, bool overwrite,
                                    Kind kind);
  // Takes over `staging`, the staging directory an interrupted run left
  // next to `destination` (journal.h says what in it can be kept). The
  // destination is checked as Begin() does.
  static Result<StagedOutput> Resume(const std::filesystem::path& staging,
                                     const std::filesystem::path& destination, bool overwrite);

  StagedOutput(StagedOutput&& other) noexcept;
  StagedOutput& operator=(StagedOutput&&) = delete;
  StagedOutput(const StagedOutput&) = delete;
  ~StagedOutput();

  // Where to write.
  const std::filesystem::path& staging() const { return staging_; }
  const std::filesystem::path& destination() const { return destination_; }

  // Removes the resume journal (journal.h), flushes the staged files to
  // disk and renames them into place.
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

// Whether `name` is the name of a staging directory (of either kind).
bool IsStagingName(std::string_view name);

// The staging directories of interrupted earlier runs next to `destination`.
std::vector<std::filesystem::path> LeftoverStagingDirs(const std::filesystem::path& destination);
// Only those of one kind, sorted by name.
std::vector<std::filesystem::path> LeftoverStagingDirs(const std::filesystem::path& destination,
                                                       StagedOutput::Kind kind);

// The resume journal's name inside a staging directory (journal.h); it is
// removed at Commit() and never part of an output.
inline constexpr const char* kJournalFileName = ".ckptbridge-journal";

}  // namespace ckptbridge::engine

#endif  // CKPTBRIDGE_HOST_ENGINE_STAGING_H_
