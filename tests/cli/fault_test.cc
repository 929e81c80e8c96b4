// Faults during a conversion, with the real binary: a full disk (simulated
// with RLIMIT_FSIZE, as a write that fails with EFBIG, or the SIGXFSZ that
// kills a process that does not ignore it), and SIGKILL at several points.
// Whatever happens, the destination is either absent or the previous complete
// one; what the process could clean up, it did; what it could not (SIGKILL),
// the next run names.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "host/engine/staging.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/testing.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using testing::Exit;

struct Limits {
  rlim_t file_size = RLIM_INFINITY;
  bool ignore_sigxfsz = false;
  // Kill the process this long after its staging directory appears
  // (negative: never).
  std::chrono::milliseconds kill_after{-1};
};

// Runs `ckptbridge args...` in a child with `limits`.
Exit RunBinary(const std::vector<std::string>& args, const fs::path& work, const Limits& limits) {
  testing::RunOptions options;
  if (limits.ignore_sigxfsz) options.ignored_signals.push_back(SIGXFSZ);
  if (limits.file_size != RLIM_INFINITY) {
    options.limits.push_back({RLIMIT_FSIZE, limits.file_size});
  }
  // SIGKILL once the destination's (the last argument's) staging directory
  // has existed for `kill_after`.
  std::optional<std::chrono::steady_clock::time_point> started;
  if (limits.kill_after.count() >= 0) {
    options.signal_when = [&] {
      if (!started && !engine::LeftoverStagingDirs(args.back()).empty()) {
        started = std::chrono::steady_clock::now();
      }
      return started && std::chrono::steady_clock::now() - *started >= limits.kill_after;
    };
  }
  return testing::RunBinary(args, work, options);
}

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // About 36 MiB of bf16 in 20 layers; float32 output doubles it.
    const json config = testing::InterruptibleLlamaConfig(20);
    testing::WriteHfCheckpoint(tmp_ / "src", config, testing::LlamaFamilyTensors(config),
                               DType::kBF16, /*seed=*/5);
  }
  std::vector<std::string> ToMaxText(const fs::path& dst, bool overwrite = false) const {
    std::vector<std::string> args = {"convert",      "--to",    "maxtext",
                                     "--threads",    "1",       "--quiet",
                                     "--save-dtype", "float32", (tmp_ / "src").string()};
    if (overwrite) args.insert(args.begin() + 1, "--overwrite");
    args.push_back(dst.string());
    return args;
  }
  testing::TempDir tmp_;
};

TEST_F(FaultTest, FullDiskFailsCleanlyInBothDirections) {
  // A 256 KiB file-size limit: the embedding alone is 8 MB.
  Limits limits;
  limits.file_size = 256 << 10;
  limits.ignore_sigxfsz = true;
  for (const std::string ocdbt : {"--ocdbt", "--no-ocdbt"}) {
    SCOPED_TRACE(ocdbt);
    std::vector<std::string> args = ToMaxText(tmp_ / "mt");
    args.insert(args.begin() + 1, ocdbt);
    Exit run = RunBinary(args, tmp_.path(), limits);
    ASSERT_TRUE(run.exited) << run.err;
    EXPECT_EQ(run.code, 1) << run.err;
    EXPECT_NE(run.err.find("File too large"), std::string::npos) << run.err;
    EXPECT_FALSE(fs::exists(tmp_ / "mt"));
    EXPECT_TRUE(engine::LeftoverStagingDirs(tmp_ / "mt").empty());
  }

  // MaxText -> HF: the shards are larger than the limit.
  ASSERT_EQ(RunBinary(ToMaxText(tmp_ / "mt"), tmp_.path(), {}).code, 0);
  Exit run = RunBinary({"convert", "--to", "hf", "--quiet", "--save-dtype", "float32",
                        (tmp_ / "mt").string(), (tmp_ / "hf").string()},
                       tmp_.path(), limits);
  ASSERT_TRUE(run.exited) << run.err;
  EXPECT_EQ(run.code, 1) << run.err;
  EXPECT_NE(run.err.find("File too large"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(tmp_ / "hf"));
  EXPECT_TRUE(engine::LeftoverStagingDirs(tmp_ / "hf").empty());
}

TEST_F(FaultTest, KilledBySigxfszLeavesNoDestination) {
  Limits limits;
  limits.file_size = 256 << 10;
  Exit run = RunBinary(ToMaxText(tmp_ / "mt"), tmp_.path(), limits);
  EXPECT_FALSE(run.exited);
  EXPECT_EQ(run.code, SIGXFSZ);
  EXPECT_FALSE(fs::exists(tmp_ / "mt"));
}

TEST_F(FaultTest, SigkillAtAnyPointKeepsThePreviousCheckpoint) {
  // A previous complete conversion sits at the destination.
  ASSERT_EQ(RunBinary(ToMaxText(tmp_ / "mt"), tmp_.path(), {}).code, 0);
  const auto before = testing::ReadOrbax(tmp_ / "mt");
  int killed = 0;
  for (int ms : {0, 5, 20, 60, 150}) {
    SCOPED_TRACE(ms);
    Limits limits;
    limits.kill_after = std::chrono::milliseconds(ms);
    Exit run = RunBinary(ToMaxText(tmp_ / "mt", /*overwrite=*/true), tmp_.path(), limits);
    if (run.exited) {
      // The run won the race and finished: then the result is complete.
      EXPECT_EQ(run.code, 0) << run.err;
    } else {
      EXPECT_EQ(run.code, SIGKILL);
      ++killed;
    }
    // Either way the destination is a complete checkpoint with the same values.
    const auto after = testing::ReadOrbax(tmp_ / "mt");
    ASSERT_EQ(after.size(), before.size());
    for (const auto& [name, values] : before) {
      EXPECT_EQ(after.at(name).data, values.data) << name;
    }
  }
  // What SIGKILL left behind is named by the next run, not silently ignored.
  ASSERT_GT(killed, 0) << "every run finished before it could be killed";
  const std::vector<fs::path> leftovers = engine::LeftoverStagingDirs(tmp_ / "mt");
  EXPECT_FALSE(leftovers.empty());
  {
    std::vector<std::string> args = ToMaxText(tmp_ / "again");
    args.back() = (tmp_ / "mt").string();
    args.insert(args.begin() + 1, "--overwrite");
    std::erase(args, std::string("--quiet"));
    Exit next = RunBinary(args, tmp_.path(), {});
    EXPECT_EQ(next.code, 0) << next.err;
    EXPECT_NE(next.err.find("unfinished output(s) of an interrupted earlier run"),
              std::string::npos)
        << next.err;
  }
}

TEST_F(FaultTest, SigkillOfAFirstConversionLeavesNoDestination) {
  for (int ms : {0, 10, 40}) {
    SCOPED_TRACE(ms);
    Limits limits;
    limits.kill_after = std::chrono::milliseconds(ms);
    const fs::path dst = tmp_ / ("mt" + std::to_string(ms));
    Exit run = RunBinary(ToMaxText(dst), tmp_.path(), limits);
    if (run.exited) {
      EXPECT_EQ(run.code, 0) << run.err;  // finished before the kill: complete
    } else {
      EXPECT_FALSE(fs::exists(dst));
    }
  }
}

}  // namespace
}  // namespace ckptbridge
