// Conversions under an address-space limit (RLIMIT_AS, what `ulimit -v`
// sets), with the real binary: a limit of --max-memory plus the overhead
// execute.h states (kFixedOverheadBytes + threads * kPerThreadOverheadBytes)
// is enough to convert a checkpoint several times larger than --max-memory,
// whose one shard is larger than the whole limit, both ways and bit-exact;
// a limit far too small fails with a message and exit code 1, never a crash,
// and leaves no destination and no staging directory behind.
//
// A cgroup memory limit is not tested: the CI container gives the tests no
// cgroup of their own to limit (README.md, "Memory").
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "host/engine/execute.h"
#include "host/engine/staging.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/testing.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using testing::Exit;

// Runs `ckptbridge args...` in a child whose address space is limited to
// `limit` bytes.
Exit RunLimited(const std::vector<std::string>& args, const fs::path& work, rlim_t limit) {
  testing::RunOptions options;
  options.limits.push_back({RLIMIT_AS, limit});
  return testing::RunBinary(args, work, options);
}

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kMaxMemory = 40 * kMiB;
constexpr int kThreads = 2;

class MemoryLimitTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // About 200 MB of bf16 in one shard: 28 layers of 5.9 MB and two 16 MB
    // vocabulary tensors, more than four times --max-memory and larger than
    // the limit.
    const json config = {{"model_type", "llama"},    {"vocab_size", 16000},
                         {"hidden_size", 512},       {"intermediate_size", 1408},
                         {"num_hidden_layers", 28},  {"num_attention_heads", 8},
                         {"num_key_value_heads", 4}, {"tie_word_embeddings", false}};
    source_ = new testing::TempDir;
    testing::WriteHfCheckpoint(*source_ / "src", config, testing::LlamaFamilyTensors(config),
                               DType::kBF16, /*seed=*/11);
  }
  static void TearDownTestSuite() {
    delete source_;
    source_ = nullptr;
  }
  static fs::path Source() { return *source_ / "src"; }

  void SetUp() override {
#if defined(__SANITIZE_ADDRESS__)
    // AddressSanitizer reserves terabytes of address space for its shadow
    // memory, so no address-space limit can hold a sanitized binary; the
    // release build runs these tests.
    GTEST_SKIP() << "RLIMIT_AS cannot be tested under AddressSanitizer";
#endif
  }

  static std::vector<std::string> Convert(const std::string& to, const fs::path& src,
                                          const fs::path& dst) {
    return {"convert",
            "--to",
            to,
            "--quiet",
            "--threads",
            std::to_string(kThreads),
            "--max-memory",
            std::to_string(kMaxMemory >> 20) + "MiB",
            src.string(),
            dst.string()};
  }

  static testing::TempDir* source_;
  testing::TempDir tmp_;
};

testing::TempDir* MemoryLimitTest::source_ = nullptr;

TEST_F(MemoryLimitTest, MaxMemoryPlusTheStatedOverheadIsEnoughBothWays) {
  const rlim_t limit =
      kMaxMemory + engine::kFixedOverheadBytes + kThreads * engine::kPerThreadOverheadBytes;
  const uint64_t shard = fs::file_size(Source() / "model.safetensors");
  ASSERT_GT(shard, 4 * kMaxMemory);
  ASSERT_GT(shard, limit) << "the shard must not fit the limit, or mapping it whole would pass";

  const Exit to_mt = RunLimited(Convert("maxtext", Source(), tmp_ / "mt"), tmp_.path(), limit);
  ASSERT_TRUE(to_mt.exited) << "killed by signal " << to_mt.code << ": " << to_mt.err;
  ASSERT_EQ(to_mt.code, 0) << to_mt.err;
  const Exit to_hf = RunLimited(Convert("hf", tmp_ / "mt", tmp_ / "hf"), tmp_.path(), limit);
  ASSERT_TRUE(to_hf.exited) << "killed by signal " << to_hf.code << ": " << to_hf.err;
  ASSERT_EQ(to_hf.code, 0) << to_hf.err;

  // bf16 -> MaxText bf16 -> bf16 is bit-exact.
  const auto before = testing::ReadHfBytes(Source());
  const auto after = testing::ReadHfBytes(tmp_ / "hf");
  ASSERT_EQ(after.size(), before.size());
  for (const auto& [name, bytes] : before) {
    ASSERT_TRUE(after.count(name)) << name;
    EXPECT_TRUE(after.at(name) == bytes) << name;
  }
}

TEST_F(MemoryLimitTest, ALimitFarTooSmallFailsWithAMessageAndLeavesNothing) {
  // The MaxText side, converted without a limit.
  ASSERT_EQ(RunLimited(Convert("maxtext", Source(), tmp_ / "mt"), tmp_.path(), RLIM_INFINITY).code,
            0);
  // Below the program's own 30-odd MiB the dynamic loader fails before
  // ckptbridge runs; above it, these fail while starting threads, mapping a
  // slice or allocating its buffers: with a large --max-memory each slice is
  // a whole tensor and needs more than the limits leave.
  for (const uint64_t limit_mib : {32, 40}) {
    for (const auto& [to, src, dst] :
         {std::tuple<std::string, fs::path, fs::path>{"maxtext", Source(), tmp_ / "mt2"},
          {"hf", tmp_ / "mt", tmp_ / "hf"}}) {
      SCOPED_TRACE("to " + to + " under " + std::to_string(limit_mib) + " MiB");
      std::vector<std::string> args = Convert(to, src, dst);
      args[7] = "1GiB";  // --max-memory
      const Exit run = RunLimited(args, tmp_.path(), limit_mib * kMiB);
      ASSERT_TRUE(run.exited) << "killed by signal " << run.code << ": " << run.err;
      EXPECT_EQ(run.code, 1) << run.err;
      EXPECT_EQ(run.err.rfind("ckptbridge", 0), 0u) << run.err;
      const bool about_memory =
          run.err.find("memory") != std::string::npos ||
          run.err.find("address space") != std::string::npos ||
          run.err.find("Resource temporarily unavailable") != std::string::npos;
      EXPECT_TRUE(about_memory) << run.err;
      EXPECT_FALSE(fs::exists(dst));
      EXPECT_TRUE(engine::LeftoverStagingDirs(dst).empty());
    }
  }
}

}  // namespace
}  // namespace ckptbridge
