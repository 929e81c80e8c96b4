// Faults during a conversion, with the real binary: a full disk (simulated
// with RLIMIT_FSIZE, as a write that fails with EFBIG, or the SIGXFSZ that
// kills a process that does not ignore it), and SIGKILL at several points.
// Whatever happens, the destination is either absent or the previous complete
// one; what the process could clean up, it did; what it could not (SIGKILL),
// the next run names.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "host/engine/staging.h"
#include "tests/testing/testing.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kBinary = fs::path(CKPTBRIDGE_BINARY_DIR) / "bin" / "ckptbridge";

struct Exit {
  bool exited = false;  // false: killed by a signal
  int code = 0;         // exit code, or the signal
  std::string err;
};

struct Limits {
  rlim_t file_size = RLIM_INFINITY;
  bool ignore_sigxfsz = false;
  // Kill the process this long after its staging directory appears
  // (negative: never).
  std::chrono::milliseconds kill_after{-1};
};

// Runs `ckptbridge args...` in a child with `limits`.
Exit RunBinary(const std::vector<std::string>& args, const fs::path& work, const Limits& limits) {
  const fs::path log = work / "stderr.txt";
  pid_t pid = fork();
  if (pid == 0) {
    std::freopen(log.c_str(), "w", stderr);
    std::freopen("/dev/null", "w", stdout);
    if (limits.ignore_sigxfsz) signal(SIGXFSZ, SIG_IGN);
    if (limits.file_size != RLIM_INFINITY) {
      const rlimit limit{limits.file_size, limits.file_size};
      setrlimit(RLIMIT_FSIZE, &limit);
    }
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>("ckptbridge"));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(kBinary.c_str(), argv.data());
    _exit(127);
  }
  int status = 0;
  if (limits.kill_after.count() >= 0) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    std::optional<std::chrono::steady_clock::time_point> started;
    while (std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid, &status, WNOHANG) == pid) break;
      if (!started && !engine::LeftoverStagingDirs(args.back()).empty()) {
        started = std::chrono::steady_clock::now();
      }
      if (started && std::chrono::steady_clock::now() - *started >= limits.kill_after) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  } else {
    waitpid(pid, &status, 0);
  }
  Exit out;
  out.exited = WIFEXITED(status);
  out.code = out.exited ? WEXITSTATUS(status) : WTERMSIG(status);
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  out.err = text.str();
  return out;
}

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // About 20 MiB of bf16 in 20 layers; float32 output doubles it.
    const json config = {{"model_type", "llama"},    {"vocab_size", 8000},
                         {"hidden_size", 256},       {"intermediate_size", 704},
                         {"num_hidden_layers", 20},  {"num_attention_heads", 4},
                         {"num_key_value_heads", 2}, {"tie_word_embeddings", false}};
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
