// fuzz/fuzz_util.h - what every fuzz target shares: a check that turns a
// broken invariant into a crash libFuzzer reports, and the rule that every
// refusal of hostile bytes is a bad-input error (exit code 2) naming where.
#ifndef CKPTBRIDGE_FUZZ_FUZZ_UTIL_H_
#define CKPTBRIDGE_FUZZ_FUZZ_UTIL_H_

#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "host/base/status.h"

// Aborts (a crash to libFuzzer) when `cond` is false. Unlike assert() it is
// never compiled out.
#define FUZZ_CHECK(cond)                                                                  \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "FUZZ_CHECK failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

namespace ckptbridge::fuzz {

// A parser's answer to bytes it refuses: a bad-input code (the CLI exits 2)
// and a message that starts with the label the caller gave it, so the user
// learns which file is at fault. ResourceExhausted is allowed where
// `allow_exhausted` (a declared size the process cannot allocate).
inline void CheckRefusal(const Status& status, std::string_view label,
                         bool allow_exhausted = false) {
  if (status.ok()) return;
  const bool exhausted = status.code() == StatusCode::kResourceExhausted;
  if (!(ExitCodeFor(status) == 2 || (allow_exhausted && exhausted))) {
    std::fprintf(stderr, "unexpected status code (%s): %s\n",
                 std::string(StatusCodeName(status.code())).c_str(), status.message().c_str());
    std::abort();
  }
  if (!label.empty() && std::string_view(status.message()).substr(0, label.size()) != label) {
    std::fprintf(stderr, "message does not start with '%.*s': %s\n", static_cast<int>(label.size()),
                 label.data(), status.message().c_str());
    std::abort();
  }
}

}  // namespace ckptbridge::fuzz

#endif  // CKPTBRIDGE_FUZZ_FUZZ_UTIL_H_
