// Interrupting a conversion: the real binary, a real SIGINT/SIGTERM sent while
// it writes. Whatever happens, the destination must not exist afterwards and
// no staging directory may be left behind.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "host/engine/staging.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/testing.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool HasStagingDir(const fs::path& dir) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (engine::IsStagingName(entry.path().filename().string())) return true;
  }
  return false;
}

class InterruptTest : public ::testing::TestWithParam<int> {};

TEST_P(InterruptTest, LeavesNothingAtTheDestination) {
  const int signal_number = GetParam();
  testing::TempDir tmp;
  // About 40 MiB in 40 layers: enough slices that the signal lands mid-run.
  const json config = testing::InterruptibleLlamaConfig(40);
  testing::WriteHfCheckpoint(tmp / "src", config, testing::LlamaFamilyTensors(config), DType::kBF16,
                             /*seed=*/11);
  const fs::path dst = tmp / "mt";

  // Signal as soon as the staging directory exists, i.e. while writing.
  testing::RunOptions options;
  options.signal_when = [&tmp] { return HasStagingDir(tmp.path()); };
  options.signal = signal_number;
  const testing::Exit run =
      testing::RunBinary({"convert", "--to", "maxtext", "--threads", "1", "--save-dtype", "float32",
                          (tmp / "src").string(), dst.string()},
                         tmp.path(), options);
  ASSERT_TRUE(run.killed) << "the conversion never started writing";
  ASSERT_TRUE(run.exited) << run.err;
  EXPECT_EQ(run.code, 1) << run.err;
  EXPECT_NE(run.err.find("interrupted; nothing was written to"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(dst));
  EXPECT_FALSE(HasStagingDir(tmp.path()));
}

INSTANTIATE_TEST_SUITE_P(Signals, InterruptTest, ::testing::Values(SIGINT, SIGTERM),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == SIGINT ? "SIGINT" : "SIGTERM";
                         });

}  // namespace
}  // namespace ckptbridge
