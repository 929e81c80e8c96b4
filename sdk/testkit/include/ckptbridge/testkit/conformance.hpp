// ckptbridge/testkit/conformance.hpp - the plugin conformance kit.
//
// Checks one plugin file the way the host will use it, and nothing else: it
// is loaded alone (no discovery, no environment), through the host's own
// loader, adapter and conversion engine. `ckptbridge plugins check FILE` is a
// thin command around CheckPlugin(); link `ckptbridge::testkit` to run the
// same checks from your own tests:
//
//   #include "ckptbridge/testkit/conformance.hpp"
//
//   TEST(MyPlugin, Conforms) {
//     ckptbridge::testkit::Options options;
//     options.plugin = "path/to/libckptbridge_myfamily.so";
//     ckptbridge::testkit::Report report = ckptbridge::testkit::CheckPlugin(options);
//     EXPECT_TRUE(report.ok()) << ckptbridge::testkit::FormatReport(report);
//   }
//
// What is checked, one result per line (`name` below):
//
//   load                the file loads (RTLD_NOW) and its descriptor validates:
//                       ABI versions, name, semver, model types, functions
//   presets             every MaxText preset yields a JSON config.json whose
//                       model_type the plugin serves
//   samples             sample configs (ABI 1.1) exist for every model type;
//                       SKIP for plugins that declare none (e.g. built
//                       against ABI 1.0): the checks below need them
//   create T/V          an adapter for sample config V of model type T
//   config T/V          translate_config both ways: JSON objects, and the HF
//                       config keeps model_type T
//   rules T/V DIR SCAN  the rule set of each direction, scanned and unscanned:
//                       unique MaxText paths; HF key templates that resolve
//                       (only {layer}/{expert}, each used exactly when its
//                       stack axis exists) to distinct names; op chains that
//                       map the HF slice shapes onto the MaxText slice shapes
//                       and that the host can invert (custom ops only in
//                       to-MaxText rules); axis meanings consistent with the
//                       shapes (embed and vocab: one size per side; heads,
//                       kv heads, experts and layers: one size per rule;
//                       stacked axes declared with their own meaning)
//   round trip T/V SCAN STORAGE
//                       a random HF checkpoint (bfloat16) synthesized from the
//                       rules is converted to MaxText (float32) and back, with
//                       OCDBT on/off x zarr3 on/off: every MaxText path the
//                       rules declare is written and no other, every HF tensor
//                       comes back, bit for bit unless its rule is flagged
//                       lossy
//
// Outcomes are PASS, FAIL or SKIP; a report is ok() when nothing failed.
#ifndef CKPTBRIDGE_TESTKIT_CONFORMANCE_HPP_
#define CKPTBRIDGE_TESTKIT_CONFORMANCE_HPP_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#if defined(CKPTBRIDGE_TESTKIT_BUILDING)
#define CKPTBRIDGE_TESTKIT_API __attribute__((visibility("default")))
#else
#define CKPTBRIDGE_TESTKIT_API
#endif

namespace ckptbridge::testkit {

enum class Outcome { kPass, kFail, kSkip };

struct CheckResult {
  std::string name;  // "round trip llama/base scanned ocdbt+zarr3"
  Outcome outcome = Outcome::kPass;
  std::string detail;  // what was seen; for a failure, what was wrong
};

struct Options {
  // The plugin file (libckptbridge_<name>.so).
  std::filesystem::path plugin;
  // Where synthesized checkpoints and conversions go. Empty: a fresh
  // temporary directory, removed at the end. Given: created if needed and
  // kept, one folder per sample (<model type>-<variant>/hf holds the
  // synthesized HF checkpoint).
  std::filesystem::path work_dir;
  // Seed of the random tensor values (the same seed gives the same files).
  uint32_t seed = 1234;
  // false: round trips through the default storage only (OCDBT + zarr3).
  bool all_storage_variants = true;
  // Called with each result as soon as it is known (e.g. to print progress).
  std::function<void(const CheckResult&)> on_result;
};

struct Report {
  std::vector<CheckResult> results;

  size_t Count(Outcome outcome) const {
    size_t n = 0;
    for (const CheckResult& r : results) n += r.outcome == outcome ? 1 : 0;
    return n;
  }
  bool ok() const { return Count(Outcome::kFail) == 0; }
};

// Runs every check on options.plugin. Never throws for problems of the
// plugin; they are FAIL results.
CKPTBRIDGE_TESTKIT_API Report CheckPlugin(const Options& options);

// "PASS  name: detail" (FAIL / SKIP likewise).
CKPTBRIDGE_TESTKIT_API std::string FormatResult(const CheckResult& result);
// Every result, one per line, then "N passed, M failed, K skipped".
CKPTBRIDGE_TESTKIT_API std::string FormatReport(const Report& report);

}  // namespace ckptbridge::testkit

#endif  // CKPTBRIDGE_TESTKIT_CONFORMANCE_HPP_
