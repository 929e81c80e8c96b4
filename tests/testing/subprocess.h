// tests/testing/subprocess.h - running the real `ckptbridge` binary of this
// build in a child process, for the tests that need what only a separate
// process shows: a resource limit (RLIMIT_AS, RLIMIT_FSIZE) that must not
// bind the test itself, or a signal (SIGKILL, SIGINT, SIGTERM) that lands
// while the binary writes. Everything else runs the CLI in-process through
// RunCli (testing.h), which is faster and needs no fork.
//
// The one entry point is RunBinary: fork, set limits and signal dispositions
// in the child, exec the binary with stdout discarded and stderr captured to a
// file, then either wait for it or watch it and send a signal once a
// condition the test names holds. What stays in each test is only what is its
// own: when to send the signal (a staging directory appearing, a journal
// reaching N lines, ...) and which limits to set.
#ifndef CKPTBRIDGE_TESTS_TESTING_SUBPROCESS_H_
#define CKPTBRIDGE_TESTS_TESTING_SUBPROCESS_H_

#include <signal.h>
#include <sys/resource.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ckptbridge::testing {

// <build>/bin/ckptbridge: the binary this build made (CKPTBRIDGE_BINARY_DIR
// is compiled into the testing library). Tests that run it must depend on the
// `ckptbridge` and `ckptbridge_plugins` targets so that it is up to date.
std::filesystem::path BinaryPath();

// How a child run ended.
struct Exit {
  bool exited = false;  // true: it exited on its own; false: a signal ended it
  int code = 0;         // the exit code when `exited`, else the signal's number
  std::string err;      // everything it wrote to stderr
  // Whether RunBinary sent RunOptions::signal because `signal_when` held.
  // The child may still have exited first, or have handled the signal and
  // exited with a code: read `exited` and `code` for how it ended.
  bool killed = false;
};

// A limit set in the child before exec, soft and hard alike, so that the
// binary cannot raise it again.
struct ResourceLimit {
  int resource = 0;  // RLIMIT_AS, RLIMIT_FSIZE, ...
  rlim_t value = RLIM_INFINITY;
};

// What RunBinary does besides run the binary. The default: no limits, no
// signal, wait for as long as the child runs.
struct RunOptions {
  // Set with setrlimit in the child; a limit that cannot be set ends the
  // child with exit code 126 before exec, so a test never runs unlimited
  // believing it is limited.
  std::vector<ResourceLimit> limits;
  // Set to SIG_IGN in the child. An ignored disposition survives exec: with
  // SIGXFSZ ignored, a write past RLIMIT_FSIZE fails with EFBIG (a full disk,
  // as the binary sees it) instead of killing the process.
  std::vector<int> ignored_signals;

  // When set, RunBinary polls the child every `poll` instead of blocking:
  // the first time `signal_when()` returns true, it sends `signal` once
  // (Exit::killed) and goes on waiting for the child to end. The condition
  // runs in the test's process between polls, so it can look at what the
  // child has written so far (e.g. whether a staging directory exists).
  std::function<bool()> signal_when;
  int signal = SIGKILL;
  std::chrono::microseconds poll{200};
  // A child still running this long after the start is SIGKILLed and
  // reaped, so that a hung conversion fails its test (Exit::exited false,
  // code SIGKILL, `killed` false when `signal_when` never held) instead of
  // hanging it or leaving a process behind. Only with `signal_when`: without
  // it RunBinary blocks in waitpid for as long as the child runs.
  std::chrono::seconds timeout{60};
};

// Runs `ckptbridge args...` (argv[0] "ckptbridge") in a child process with
// `options`, its stdout sent to /dev/null and its stderr to
// `work`/stderr.txt, which is read back into Exit::err (and overwritten by
// the next run with the same `work`). The child keeps the test's working
// directory and environment; pass absolute paths.
Exit RunBinary(const std::vector<std::string>& args, const std::filesystem::path& work,
               const RunOptions& options = {});

// The Llama config of the tests that interrupt the binary mid-conversion:
// large enough that a signal sent once writing has begun lands while it is
// still writing, small enough to keep the tests short. An 8000 x 256
// vocabulary (embedding and untied lm_head, about 7.8 MiB of bf16), 4 heads
// and 2 KV heads of 64, MLP 704, so about 1.4 MiB of bf16 per layer.
nlohmann::json InterruptibleLlamaConfig(int num_hidden_layers);

}  // namespace ckptbridge::testing

#endif  // CKPTBRIDGE_TESTS_TESTING_SUBPROCESS_H_
