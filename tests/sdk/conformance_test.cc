// Tests for the conformance kit (sdk/testkit) and `ckptbridge plugins check`:
// the example plugin passes everything; each faulty plugin fails exactly the
// check its defect belongs to, with a message naming the culprit.
#include "ckptbridge/testkit/conformance.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "host/cli/commands.h"

namespace ckptbridge::testkit {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

fs::path SdkPlugin(const std::string& dir, const std::string& name) {
  return fs::path(CKB_SDK_PLUGIN_ROOT) / dir / ("libckptbridge_" + name + ".so");
}
fs::path Faulty(const std::string& defect) {
  return SdkPlugin("faulty_" + defect, "faulty_" + defect);
}

Report Check(const fs::path& plugin, bool all_storage = true) {
  Options options;
  options.plugin = plugin;
  options.all_storage_variants = all_storage;
  return CheckPlugin(options);
}

std::vector<const CheckResult*> Failures(const Report& report) {
  std::vector<const CheckResult*> failed;
  for (const CheckResult& r : report.results) {
    if (r.outcome == Outcome::kFail) failed.push_back(&r);
  }
  return failed;
}

// The one failure of a report (the test fails if there is not exactly one).
CheckResult OnlyFailure(const Report& report) {
  std::vector<const CheckResult*> failed = Failures(report);
  EXPECT_EQ(failed.size(), 1u) << FormatReport(report);
  return failed.empty() ? CheckResult{} : *failed[0];
}

// --- A conforming plugin ----------------------------------------------------------

TEST(ConformanceTest, TheExamplePluginPassesEveryCheck) {
  Report report = Check(SdkPlugin("wren", "wren"));
  EXPECT_TRUE(report.ok()) << FormatReport(report);
  EXPECT_EQ(report.Count(Outcome::kSkip), 0u) << FormatReport(report);
  std::vector<std::string> round_trips;
  for (const CheckResult& r : report.results) {
    if (r.name.rfind("round trip", 0) == 0) round_trips.push_back(r.name);
  }
  // 2 samples x scanned/unscanned x OCDBT on/off x zarr3 on/off.
  ASSERT_EQ(round_trips.size(), 16u) << FormatReport(report);
  EXPECT_EQ(round_trips[0], "round trip wren/untied scanned ocdbt+zarr3");
  EXPECT_EQ(round_trips[3], "round trip wren/untied scanned no-ocdbt+zarr2");
  EXPECT_EQ(round_trips[4], "round trip wren/untied unscanned ocdbt+zarr3");
  EXPECT_EQ(round_trips[15], "round trip wren/tied unscanned no-ocdbt+zarr2");
  EXPECT_EQ(report.results[0].name, "load");
  EXPECT_THAT(report.results[0].detail, HasSubstr("wren 0.1.0, requires ABI 1.0"));
}

TEST(ConformanceTest, ReportsCountsAndStreamsResults) {
  Options options;
  options.plugin = SdkPlugin("wren", "wren");
  options.all_storage_variants = false;
  std::vector<std::string> streamed;
  options.on_result = [&](const CheckResult& r) { streamed.push_back(FormatResult(r)); };
  Report report = CheckPlugin(options);
  ASSERT_EQ(streamed.size(), report.results.size());
  EXPECT_THAT(streamed[0], StartsWith("PASS  load: wren 0.1.0"));
  EXPECT_THAT(FormatReport(report),
              HasSubstr(std::to_string(report.results.size()) + " passed, 0 failed, 0 skipped\n"));
  // Rules, per sample: both directions, scanned and unscanned.
  EXPECT_THAT(FormatReport(report),
              HasSubstr("PASS  rules wren/tied to-hf unscanned: 17 rules over 17 HF tensors"));
}

TEST(ConformanceTest, AKeptWorkDirHoldsTheSynthesizedCheckpoint) {
  fs::path work = fs::temp_directory_path() / ("ckb-sdk-test-" + std::to_string(::getpid()));
  fs::remove_all(work);
  Options options;
  options.plugin = SdkPlugin("wren", "wren");
  options.work_dir = work;
  options.all_storage_variants = false;
  Report report = CheckPlugin(options);
  EXPECT_TRUE(report.ok()) << FormatReport(report);
  EXPECT_TRUE(fs::exists(work / "wren-untied" / "hf" / "config.json"));
  EXPECT_TRUE(fs::exists(work / "wren-untied" / "hf" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(work / "wren-tied" / "scanned-ocdbt+zarr3" / "maxtext"));
  fs::remove_all(work);
}

TEST(ConformanceTest, TheSameSeedGivesTheSameCheckpoint) {
  auto bytes_with_seed = [](uint32_t seed) {
    fs::path work = fs::temp_directory_path() /
                    ("ckb-sdk-seed-" + std::to_string(::getpid()) + "-" + std::to_string(seed));
    fs::remove_all(work);
    Options options;
    options.plugin = Faulty("ok");
    options.work_dir = work;
    options.seed = seed;
    options.all_storage_variants = false;
    EXPECT_TRUE(CheckPlugin(options).ok());
    std::ifstream in(work / "faulty-base" / "hf" / "model.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    fs::remove_all(work);
    return bytes;
  };
  std::string a = bytes_with_seed(7), b = bytes_with_seed(7), c = bytes_with_seed(8);
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

// --- Faulty plugins: one failure each, naming the culprit ---------------------------

TEST(ConformanceTest, TheBaselineFaultyPluginPasses) {
  Report report = Check(Faulty("ok"));
  EXPECT_TRUE(report.ok()) << FormatReport(report);
}

TEST(ConformanceTest, DuplicateMaxTextPath) {
  Report report = Check(Faulty("dup_path"), false);
  std::vector<const CheckResult*> failed = Failures(report);
  ASSERT_EQ(failed.size(), 4u) << FormatReport(report);  // both directions, both layouts
  EXPECT_EQ(failed[0]->name, "rules faulty/base to-maxtext scanned");
  EXPECT_THAT(failed[0]->detail,
              HasSubstr("MaxText path 'decoder.layers.w.kernel' is written by two rules"));
  EXPECT_THAT(FormatReport(report), HasSubstr("SKIP  round trips faulty/base"));
}

TEST(ConformanceTest, UnknownTemplatePlaceholder) {
  Report report = Check(Faulty("template"), false);
  std::vector<const CheckResult*> failed = Failures(report);
  ASSERT_EQ(failed.size(), 2u) << FormatReport(report);  // scanned, both directions
  EXPECT_EQ(failed[0]->name, "rules faulty/base to-maxtext scanned");
  EXPECT_THAT(failed[0]->detail,
              HasSubstr("HF template 'model.layers.{lyr}.w' has placeholder {lyr}; only {layer} "
                        "and {expert} exist"));
  EXPECT_THAT(failed[0]->detail, HasSubstr("has no {layer} but the rule stacks layers"));
}

TEST(ConformanceTest, OpChainThatDoesNotReachTheMaxTextShape) {
  Report report = Check(Faulty("chain"), false);
  std::vector<const CheckResult*> failed = Failures(report);
  ASSERT_EQ(failed.size(), 4u) << FormatReport(report);
  EXPECT_THAT(failed[0]->detail,
              HasSubstr("rule 'decoder.layers.w.kernel': the op chain turns HF slices into [16] "
                        "but the MaxText slices are [4, 4]"));
}

TEST(ConformanceTest, InconsistentAxisMeanings) {
  Report report = Check(Faulty("axes"), false);
  std::vector<const CheckResult*> failed = Failures(report);
  ASSERT_EQ(failed.size(), 4u) << FormatReport(report);
  EXPECT_THAT(failed[0]->detail,
              HasSubstr("MaxText axis meaning embed has size 12 in 'token_embedder.embedding' "
                        "[12, 4] axis 0 but 4 in 'decoder.layers.w.kernel' [4, 2, 4] axis 0"));
}

TEST(ConformanceTest, AxisMeaningsThatDisagreeWithinARule) {
  Report report = Check(Faulty("rule_axes"), false);
  std::vector<const CheckResult*> failed = Failures(report);
  ASSERT_EQ(failed.size(), 2u) << FormatReport(report);  // scanned, both directions
  EXPECT_EQ(failed[0]->name, "rules faulty/base to-maxtext scanned");
  EXPECT_EQ(failed[0]->detail,
            "rule 'decoder.layers.c.kernel': axis meaning layers has size 2 in its stack axis but "
            "4 in 'model.layers.{layer}.c' [4, 4] axis 0");
}

TEST(ConformanceTest, ARuleFunctionThatThrows) {
  Report report = Check(Faulty("rules_throw"), false);
  std::vector<const CheckResult*> failed = Failures(report);
  ASSERT_EQ(failed.size(), 4u) << FormatReport(report);
  EXPECT_EQ(failed[0]->detail,
            "plugin 'faulty': internal error: faulty: rules exploded for layer 7");
}

TEST(ConformanceTest, ACustomTransformThatReportsAnError) {
  Report report = Check(Faulty("custom_fails"), false);
  std::vector<const CheckResult*> failed = Failures(report);
  ASSERT_EQ(failed.size(), 2u) << FormatReport(report);  // scanned and unscanned round trips
  EXPECT_EQ(failed[0]->name, "round trip faulty/base scanned ocdbt+zarr3");
  EXPECT_THAT(failed[0]->detail, StartsWith("HF -> MaxText: "));
  EXPECT_THAT(failed[0]->detail,
              HasSubstr("plugin 'faulty': custom transform 7: faulty scale tensor missing"));
}

TEST(ConformanceTest, RulesThatReferenceMissingTensors) {
  Report report = Check(Faulty("missing"), false);
  std::vector<const CheckResult*> failed = Failures(report);
  ASSERT_EQ(failed.size(), 2u) << FormatReport(report);
  EXPECT_THAT(failed[0]->detail, StartsWith("MaxText -> HF: "));
  EXPECT_THAT(failed[0]->detail, HasSubstr("ghost"));
}

TEST(ConformanceTest, ACustomTransformThatIsNotTheInverseOfItsToHfRule) {
  Report report = Check(Faulty("not_exact"), false);
  std::vector<const CheckResult*> failed = Failures(report);
  ASSERT_EQ(failed.size(), 2u) << FormatReport(report);
  EXPECT_THAT(failed[0]->detail,
              HasSubstr("not bit-exact: model.layers.0.c (first difference at element 1)"));
}

TEST(ConformanceTest, AModelTypeWithoutSampleConfig) {
  CheckResult failure = OnlyFailure(Check(Faulty("no_sample"), false));
  EXPECT_EQ(failure.name, "samples");
  EXPECT_EQ(failure.detail, "no sample config for model type faulty_moe");
}

TEST(ConformanceTest, APluginThatDoesNotLoadFailsTheLoadCheckOnly) {
  Report report = Check(Faulty("needs_newer"));
  ASSERT_EQ(report.results.size(), 1u) << FormatReport(report);
  EXPECT_EQ(report.results[0].name, "load");
  EXPECT_EQ(report.results[0].outcome, Outcome::kFail);
  EXPECT_THAT(report.results[0].detail,
              HasSubstr("plugin requires ABI 1." + std::to_string(CKPTBRIDGE_ABI_MINOR + 1) +
                        ", this host provides ABI 1." + std::to_string(CKPTBRIDGE_ABI_MINOR)));
}

TEST(ConformanceTest, AnAbi10PluginGetsTheLoadChecksAndASkip) {
  Report report = Check(SdkPlugin("old", "old"));
  EXPECT_TRUE(report.ok()) << FormatReport(report);
  ASSERT_EQ(report.results.size(), 3u) << FormatReport(report);
  EXPECT_THAT(report.results[0].detail, HasSubstr("oldfam 0.9.0, requires ABI 1.0"));
  EXPECT_EQ(report.results[1].name, "presets");
  EXPECT_EQ(report.results[1].outcome, Outcome::kSkip);
  EXPECT_EQ(report.results[2].name, "samples");
  EXPECT_EQ(report.results[2].outcome, Outcome::kSkip);
  EXPECT_THAT(report.results[2].detail, StartsWith("an ABI 1.0 descriptor has no sample configs"));
}

// --- The command -------------------------------------------------------------------

struct CliRun {
  int code;
  std::string out, err;
};
CliRun PluginsCheck(std::vector<std::string> args) {
  std::vector<std::string> argv = {"ckptbridge", "plugins", "check"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::ostringstream out, err;
  int code = cli::RunCli(argv, out, err);
  return {code, out.str(), err.str()};
}

TEST(PluginsCheckCommandTest, PassingPluginExitsZero) {
  CliRun run = PluginsCheck({"--quick", SdkPlugin("wren", "wren").string()});
  EXPECT_EQ(run.code, 0) << run.out << run.err;
  EXPECT_THAT(run.out, StartsWith("PASS  load: wren 0.1.0"));
  EXPECT_THAT(run.out, HasSubstr("PASS  round trip wren/tied unscanned ocdbt+zarr3: "));
  EXPECT_THAT(run.out, HasSubstr(" passed, 0 failed, 0 skipped\n"));
}

TEST(PluginsCheckCommandTest, AFailedCheckExitsOne) {
  CliRun run = PluginsCheck({"--quick", Faulty("not_exact").string()});
  EXPECT_EQ(run.code, 1) << run.out << run.err;
  EXPECT_THAT(run.out,
              HasSubstr("FAIL  round trip faulty/base scanned ocdbt+zarr3: not bit-exact"));
  EXPECT_THAT(run.out, HasSubstr("9 passed, 2 failed, 1 skipped\n"));
}

TEST(PluginsCheckCommandTest, AMissingFileIsAFailedLoad) {
  CliRun run = PluginsCheck({"/nonexistent/libckptbridge_x.so"});
  EXPECT_EQ(run.code, 1);
  EXPECT_THAT(run.out, StartsWith("FAIL  load: /nonexistent/libckptbridge_x.so: no such file"));
}

TEST(PluginsCheckCommandTest, BadUsageExitsTwo) {
  CliRun none = PluginsCheck({});
  EXPECT_EQ(none.code, 2);
  EXPECT_THAT(none.err, HasSubstr("expected exactly one plugin FILE"));
  CliRun two = PluginsCheck({"a.so", "b.so"});
  EXPECT_EQ(two.code, 2);
  CliRun help = PluginsCheck({"--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_THAT(help.out, HasSubstr("Usage: ckptbridge plugins check [options] FILE"));
}

}  // namespace
}  // namespace ckptbridge::testkit
