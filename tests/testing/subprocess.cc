#include "tests/testing/subprocess.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace ckptbridge::testing {
namespace fs = std::filesystem;

fs::path BinaryPath() { return fs::path(CKPTBRIDGE_BINARY_DIR) / "bin" / "ckptbridge"; }

Exit RunBinary(const std::vector<std::string>& args, const fs::path& work,
               const RunOptions& options) {
  const fs::path log = work / "stderr.txt";
  // Built before fork: the child only calls what is safe between fork and
  // exec in a process that may have threads.
  const std::string binary = BinaryPath().string();
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>("ckptbridge"));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  Exit out;
  const pid_t pid = fork();
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(errno);
    out.code = -1;
    return out;
  }
  if (pid == 0) {
    std::freopen(log.c_str(), "w", stderr);
    std::freopen("/dev/null", "w", stdout);
    for (int sig : options.ignored_signals) signal(sig, SIG_IGN);
    for (const ResourceLimit& limit : options.limits) {
      const rlimit value{limit.value, limit.value};
      if (setrlimit(limit.resource, &value) != 0) _exit(126);
    }
    execv(binary.c_str(), argv.data());
    _exit(127);
  }

  int status = 0;
  if (options.signal_when) {
    const auto deadline = std::chrono::steady_clock::now() + options.timeout;
    bool reaped = false;
    while (std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid, &status, WNOHANG) == pid) {
        reaped = true;
        break;
      }
      if (!out.killed && options.signal_when()) {
        kill(pid, options.signal);
        out.killed = true;
      }
      std::this_thread::sleep_for(options.poll);
    }
    if (!reaped) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
  } else {
    waitpid(pid, &status, 0);
  }
  out.exited = WIFEXITED(status);
  out.code = out.exited ? WEXITSTATUS(status) : WTERMSIG(status);
  std::ifstream in(log, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  out.err = text.str();
  return out;
}

nlohmann::json InterruptibleLlamaConfig(int num_hidden_layers) {
  return {{"model_type", "llama"},
          {"vocab_size", 8000},
          {"hidden_size", 256},
          {"intermediate_size", 704},
          {"num_hidden_layers", num_hidden_layers},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"tie_word_embeddings", false}};
}

}  // namespace ckptbridge::testing
