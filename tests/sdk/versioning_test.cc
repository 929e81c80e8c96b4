// Versioning as a user sees it: `ckptbridge plugins` shows each plugin's own
// semver; of two plugins serving one family the first in discovery order wins
// and a warning names both files; --plugin FILE picks one explicitly. Uses
// tests/plugin's test plugins: good/ and good_v2/ hold family "testfam" at
// 1.0.0 and 2.0.0, other/ holds "otherfam", which also claims test_b.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "host/cli/commands.h"
#include "host/plugin/loader.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

fs::path CaseDir(const std::string& name) { return fs::path(CKB_TEST_PLUGIN_ROOT) / name; }
fs::path PluginFile(const std::string& dir, const std::string& name) {
  return CaseDir(dir) / ("libckptbridge_" + name + ".so");
}

// The plugins of a `plugins --json` document from the test plugin folders
// (the first-party plugins next to the test binary are found too).
nlohmann::json TestPlugins(const nlohmann::json& doc) {
  nlohmann::json found = nlohmann::json::array();
  for (const auto& p : doc["plugins"]) {
    if (p["path"].get<std::string>().rfind(CKB_TEST_PLUGIN_ROOT, 0) == 0) found.push_back(p);
  }
  return found;
}

struct CliRun {
  int code;
  std::string out, err;
};
CliRun Plugins(std::vector<std::string> args) {
  std::vector<std::string> argv = {"ckptbridge", "plugins"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::ostringstream out, err;
  int code = cli::RunCli(argv, out, err);
  return {code, out.str(), err.str()};
}

TEST(VersioningTest, PluginsShowsEachPluginsVersion) {
  CliRun run = Plugins({"--json", "--plugin-dir", CaseDir("good").string(), "--plugin-dir",
                        CaseDir("other").string()});
  ASSERT_EQ(run.code, 0) << run.err;
  nlohmann::json plugins = TestPlugins(nlohmann::json::parse(run.out));
  ASSERT_EQ(plugins.size(), 2u);
  EXPECT_EQ(plugins[0]["name"], "testfam");
  EXPECT_EQ(plugins[0]["version"], "1.0.0");
  EXPECT_EQ(plugins[1]["name"], "otherfam");
  EXPECT_EQ(plugins[1]["version"], "0.3.0");
}

TEST(VersioningTest, TheFirstInDiscoveryOrderWinsAndBothPathsAreNamed) {
  CliRun run = Plugins(
      {"--plugin-dir", CaseDir("good").string(), "--plugin-dir", CaseDir("good_v2").string()});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("1.0.0"));
  EXPECT_THAT(run.out, HasSubstr("rejected:\n  " + PluginFile("good_v2", "test_good_v2").string() +
                                 ": duplicate plugin name 'testfam' (already loaded from " +
                                 PluginFile("good", "test_good").string() + ")"));
}

TEST(VersioningTest, PluginPicksExplicitly) {
  CliRun run = Plugins({"--json", "--plugin", PluginFile("good_v2", "test_good_v2").string(),
                        "--plugin-dir", CaseDir("good").string()});
  ASSERT_EQ(run.code, 0) << run.err;
  nlohmann::json doc = nlohmann::json::parse(run.out);
  nlohmann::json plugins = TestPlugins(doc);
  ASSERT_EQ(plugins.size(), 1u);
  EXPECT_EQ(plugins[0]["version"], "2.0.0");
  ASSERT_GE(doc["rejected"].size(), 1u);
  EXPECT_EQ(doc["rejected"][0]["path"], PluginFile("good", "test_good").string());
}

TEST(VersioningTest, ConflictsAreWarnedAboutNamingBothFiles) {
  DiscoveryOptions options;
  options.use_environment = false;
  options.use_install_dir = false;
  options.plugin_dirs = {CaseDir("good"), CaseDir("good_v2"), CaseDir("other")};
  std::ostringstream warnings;
  options.warning_stream = &warnings;
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_EQ(warnings.str(),
            "ckptbridge: warning: " + PluginFile("good_v2", "test_good_v2").string() +
                ": duplicate plugin name 'testfam' (already loaded from " +
                PluginFile("good", "test_good").string() +
                ")\n"
                "ckptbridge: warning: " +
                PluginFile("other", "test_other").string() +
                ": model type 'test_b' is already served by plugin 'testfam' (" +
                PluginFile("good", "test_good").string() +
                "), which is used for it; plugin 'otherfam' still serves its other model types\n");
  ASSERT_NE(registry->FindByModelType("test_b"), nullptr);
  EXPECT_EQ(registry->FindByModelType("test_b")->name, "testfam");
  EXPECT_EQ(registry->FindByModelType("test_c")->name, "otherfam");
}

TEST(VersioningTest, NoWarningWithoutConflict) {
  DiscoveryOptions options;
  options.use_environment = false;
  options.use_install_dir = false;
  options.plugin_dirs = {CaseDir("good")};
  std::ostringstream warnings;
  options.warning_stream = &warnings;
  ASSERT_TRUE(PluginRegistry::Discover(options).ok());
  EXPECT_EQ(warnings.str(), "");
  CliRun run = Plugins({"--plugin-dir", CaseDir("good").string()});
  EXPECT_THAT(run.out, Not(HasSubstr("duplicate")));
}

}  // namespace
}  // namespace ckptbridge
