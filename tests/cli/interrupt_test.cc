// Interrupting a conversion: the real binary, a real SIGINT/SIGTERM sent while
// it writes. Whatever happens, the destination must not exist afterwards and
// no staging directory may be left behind.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "host/engine/staging.h"
#include "tests/testing/testing.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kBinary = fs::path(CKPTBRIDGE_BINARY_DIR) / "bin" / "ckptbridge";

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
  const json config = {{"model_type", "llama"},    {"vocab_size", 8000},
                       {"hidden_size", 256},       {"intermediate_size", 704},
                       {"num_hidden_layers", 40},  {"num_attention_heads", 4},
                       {"num_key_value_heads", 2}, {"tie_word_embeddings", false}};
  testing::WriteHfCheckpoint(tmp / "src", config, testing::LlamaFamilyTensors(config), DType::kBF16,
                             /*seed=*/11);
  const fs::path dst = tmp / "mt";
  const fs::path log = tmp / "stderr.txt";

  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::freopen(log.c_str(), "w", stderr);
    std::freopen("/dev/null", "w", stdout);
    execl(kBinary.c_str(), "ckptbridge", "convert", "--to", "maxtext", "--threads", "1",
          "--save-dtype", "float32", (tmp / "src").c_str(), dst.c_str(), nullptr);
    _exit(127);
  }
  // Signal as soon as the staging directory exists, i.e. while writing.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool signalled = false;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) break;
    if (!signalled && HasStagingDir(tmp.path())) {
      kill(pid, signal_number);
      signalled = true;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (!signalled || !WIFEXITED(status)) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  ASSERT_TRUE(signalled) << "the conversion never started writing";
  std::ifstream in(log);
  std::stringstream err;
  err << in.rdbuf();
  ASSERT_TRUE(WIFEXITED(status)) << err.str();
  EXPECT_EQ(WEXITSTATUS(status), 1) << err.str();
  EXPECT_NE(err.str().find("interrupted; nothing was written to"), std::string::npos) << err.str();
  EXPECT_FALSE(fs::exists(dst));
  EXPECT_FALSE(HasStagingDir(tmp.path()));
}

INSTANTIATE_TEST_SUITE_P(Signals, InterruptTest, ::testing::Values(SIGINT, SIGTERM),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == SIGINT ? "SIGINT" : "SIGTERM";
                         });

}  // namespace
}  // namespace ckptbridge
