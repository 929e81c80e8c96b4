// Tests for host/plugin/loader: loading one file, every rejection message, and
// discovery (precedence, duplicates, debug output, never the CWD). The test
// plugins live in CKB_TEST_PLUGIN_ROOT/<case>/ (tests/plugin/CMakeLists.txt).
#include "host/plugin/loader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

fs::path CaseDir(const std::string& name) { return fs::path(CKB_TEST_PLUGIN_ROOT) / name; }

fs::path PluginFile(const std::string& dir, const std::string& name) {
  return CaseDir(dir) / ("libckptbridge_" + name + ".so");
}

std::string HostAbi() {
  return std::to_string(CKPTBRIDGE_ABI_MAJOR) + "." + std::to_string(CKPTBRIDGE_ABI_MINOR);
}

// Sets (or unsets, for nullopt) an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      setenv(name, value->c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// Changes the working directory for one scope.
class ScopedCwd {
 public:
  explicit ScopedCwd(const fs::path& dir) : old_(fs::current_path()) { fs::current_path(dir); }
  ~ScopedCwd() { fs::current_path(old_); }
  ScopedCwd(const ScopedCwd&) = delete;
  ScopedCwd& operator=(const ScopedCwd&) = delete;

 private:
  fs::path old_;
};

// Only what the test names: no environment, no install directory.
DiscoveryOptions Isolated() {
  DiscoveryOptions options;
  options.use_environment = false;
  options.use_install_dir = false;
  return options;
}

std::vector<std::string> Names(const PluginRegistry& registry) {
  std::vector<std::string> names;
  for (const LoadedPlugin& p : registry.plugins()) names.push_back(p.name + " " + p.version);
  return names;
}

// A fresh directory, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "ckb_plugin_test_XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// --- LoadPlugin ---------------------------------------------------------------

TEST(PluginLoadTest, CopiesTheDescriptor) {
  fs::path file = PluginFile("good", "test_good");
  Result<LoadedPlugin> plugin = LoadPlugin(file);
  ASSERT_TRUE(plugin.ok()) << plugin.status().message();
  EXPECT_EQ(plugin->path, file);
  EXPECT_TRUE(plugin->path.is_absolute());
  EXPECT_EQ(plugin->name, "testfam");
  EXPECT_EQ(plugin->version, "1.0.0");
  EXPECT_EQ(plugin->description, "test family for the host's plugin tests");
  EXPECT_EQ(plugin->abi_major, CKPTBRIDGE_ABI_MAJOR);
  EXPECT_EQ(plugin->abi_minor, CKPTBRIDGE_ABI_MINOR);
  EXPECT_THAT(plugin->model_types, ElementsAre("test_a", "test_b"));
  EXPECT_THAT(plugin->architectures, ElementsAre("TestForCausalLM", "TestBForCausalLM"));
  EXPECT_THAT(plugin->model_presets, ElementsAre("test-small", "test-large"));
  ASSERT_NE(plugin->descriptor, nullptr);
  EXPECT_NE(plugin->descriptor->vtable, nullptr);
}

TEST(PluginLoadTest, LoadingTwiceGivesTheSameDescriptor) {
  Result<LoadedPlugin> first = LoadPlugin(PluginFile("good", "test_good"));
  Result<LoadedPlugin> second = LoadPlugin(PluginFile("good", "test_good"));
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->descriptor, second->descriptor);
}

TEST(PluginLoadTest, RelativePathsAreMadeAbsolute) {
  ScopedCwd cwd(CKB_TEST_PLUGIN_ROOT);
  Result<LoadedPlugin> plugin = LoadPlugin("good/libckptbridge_test_good.so");
  ASSERT_TRUE(plugin.ok()) << plugin.status().message();
  EXPECT_EQ(plugin->path, PluginFile("good", "test_good"));
}

struct RejectCase {
  std::string dir;
  std::string file;
  StatusCode code;
  std::string reason;  // the message after "<path>: "
};

// Names the test instance after the file ("test_abi_major", "missing").
void PrintTo(const RejectCase& c, std::ostream* os) {
  std::string stem = fs::path(c.file).stem().string();
  *os << stem.substr(std::string("libckptbridge_").size());
}

class PluginRejectTest : public ::testing::TestWithParam<RejectCase> {};

TEST_P(PluginRejectTest, NamesThePathAndTheReason) {
  const RejectCase& c = GetParam();
  fs::path file = CaseDir(c.dir) / c.file;
  Result<LoadedPlugin> plugin = LoadPlugin(file);
  ASSERT_FALSE(plugin.ok());
  EXPECT_EQ(plugin.status().message(), file.string() + ": " + c.reason);
  EXPECT_EQ(plugin.status().code(), c.code) << StatusCodeName(plugin.status().code());
}

const size_t kDescriptorV1Size =
    offsetof(ckb_plugin_descriptor, vtable) + sizeof(ckb_plugin_descriptor::vtable);

INSTANTIATE_TEST_SUITE_P(
    BadPlugins, PluginRejectTest,
    ::testing::Values(
        RejectCase{"no_entry", "libckptbridge_test_no_entry.so", StatusCode::kInvalidArgument,
                   "not a ckptbridge plugin (no ckptbridge_plugin_entry_v1 export)"},
        RejectCase{"null_with_message", "libckptbridge_test_null_with_message.so",
                   StatusCode::kFailedPrecondition,
                   "entry returned no descriptor: badfam needs a host built with CUDA support"},
        RejectCase{"null_no_message", "libckptbridge_test_null_no_message.so",
                   StatusCode::kFailedPrecondition, "entry returned no descriptor and no reason"},
        RejectCase{"abi_major", "libckptbridge_test_abi_major.so", StatusCode::kUnsupported,
                   "plugin requires ABI 2." + std::to_string(CKPTBRIDGE_ABI_MINOR) +
                       ", this host provides ABI " + HostAbi() +
                       " (the major versions must match)"},
        RejectCase{"abi_minor", "libckptbridge_test_abi_minor.so", StatusCode::kUnsupported,
                   "plugin requires ABI " + std::to_string(CKPTBRIDGE_ABI_MAJOR) +
                       ".99, this host provides ABI " + HostAbi() +
                       " (a newer ckptbridge is needed)"},
        RejectCase{"small_struct", "libckptbridge_test_small_struct.so",
                   StatusCode::kInvalidArgument,
                   "descriptor struct_size is 16 bytes, an ABI 1.0 descriptor has at least " +
                       std::to_string(kDescriptorV1Size)},
        RejectCase{"null_vtable", "libckptbridge_test_null_vtable.so", StatusCode::kInvalidArgument,
                   "descriptor has no function table (vtable is null)"},
        RejectCase{"null_create", "libckptbridge_test_null_create.so", StatusCode::kInvalidArgument,
                   "required function 'create' is null"},
        RejectCase{"name", "libckptbridge_test_name.so", StatusCode::kInvalidArgument,
                   "plugin name 'Bad Name' is not a simple identifier (lowercase letters, digits, "
                   "'_' and '-')"},
        RejectCase{"version", "libckptbridge_test_version.so", StatusCode::kInvalidArgument,
                   "plugin 'badfam' has version '1.0', which is not semver "
                   "(MAJOR.MINOR.PATCH[-suffix])"},
        RejectCase{"dup_types", "libckptbridge_test_dup_types.so", StatusCode::kInvalidArgument,
                   "plugin 'badfam' lists model type 'dup_x' twice"},
        RejectCase{"undefined", "libckptbridge_test_undefined.so", StatusCode::kInvalidArgument,
                   "cannot load: undefined symbol: ckb_test_function_nobody_defines"},
        RejectCase{"junk", "libckptbridge_junk.so", StatusCode::kInvalidArgument,
                   "cannot load: file too short"},
        RejectCase{"good", "libckptbridge_missing.so", StatusCode::kNotFound, "no such file"},
        RejectCase{"mixed", "libckptbridge_subdir.so", StatusCode::kInvalidArgument,
                   "is a directory, not a plugin file"}));

// --- Discovery: what is a candidate -------------------------------------------

TEST(PluginDiscoveryTest, ScansADirectory) {
  DiscoveryOptions options = Isolated();
  options.plugin_dirs = {CaseDir("good")};
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_THAT(Names(*registry), ElementsAre("testfam 1.0.0"));
  EXPECT_THAT(registry->rejected(), IsEmpty());
  EXPECT_THAT(registry->searched_dirs(), ElementsAre(CaseDir("good")));
}

TEST(PluginDiscoveryTest, OnlyRegularLibckptbridgeFilesAreCandidates) {
  DiscoveryOptions options = Isolated();
  options.plugin_dirs = {CaseDir("mixed")};
  std::ostringstream debug;
  options.debug = true;
  options.debug_stream = &debug;
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_THAT(Names(*registry), ElementsAre("testfam 1.0.0"));
  // The junk .so is a candidate and rejected; libother.so, the .txt file and
  // the directory named like a plugin are not candidates at all.
  ASSERT_EQ(registry->rejected().size(), 1u);
  EXPECT_EQ(registry->rejected()[0].path, PluginFile("mixed", "zz_junk"));
  EXPECT_EQ(registry->rejected()[0].reason, "cannot load: file too short");
  EXPECT_THAT(debug.str(), Not(HasSubstr("libother.so")));
  EXPECT_THAT(debug.str(), Not(HasSubstr("notes.txt")));
  EXPECT_THAT(debug.str(), Not(HasSubstr("subdir")));
}

TEST(PluginDiscoveryTest, DirectoryProblemsAreRecordedNotFatal) {
  DiscoveryOptions options = Isolated();
  options.plugin_dirs = {CaseDir("abi_major"), CaseDir("null_no_message"), CaseDir("junk"),
                         CaseDir("good")};
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_THAT(Names(*registry), ElementsAre("testfam 1.0.0"));
  ASSERT_EQ(registry->rejected().size(), 3u);
  EXPECT_EQ(registry->rejected()[0].path, PluginFile("abi_major", "test_abi_major"));
  EXPECT_THAT(registry->rejected()[0].reason, StartsWith("plugin requires ABI 2."));
  EXPECT_EQ(registry->rejected()[1].reason, "entry returned no descriptor and no reason");
  EXPECT_EQ(registry->rejected()[2].reason, "cannot load: file too short");
}

TEST(PluginDiscoveryTest, AFailingPluginFileIsFatal) {
  DiscoveryOptions options = Isolated();
  fs::path file = PluginFile("abi_minor", "test_abi_minor");
  options.plugin_files = {file};
  options.plugin_dirs = {CaseDir("good")};
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_FALSE(registry.ok());
  EXPECT_EQ(registry.status().code(), StatusCode::kUnsupported);
  EXPECT_EQ(registry.status().message(),
            file.string() + ": plugin requires ABI " + std::to_string(CKPTBRIDGE_ABI_MAJOR) +
                ".99, this host provides ABI " + HostAbi() + " (a newer ckptbridge is needed)");

  options.plugin_files = {CaseDir("good") / "libckptbridge_nope.so"};
  registry = PluginRegistry::Discover(options);
  ASSERT_FALSE(registry.ok());
  EXPECT_EQ(registry.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(registry.status().message(),
            (CaseDir("good") / "libckptbridge_nope.so").string() + ": no such file");
}

// --- Discovery: precedence ------------------------------------------------------

TEST(PluginDiscoveryTest, PluginFileBeatsPluginDir) {
  DiscoveryOptions options = Isolated();
  options.plugin_files = {PluginFile("good_v2", "test_good_v2")};
  options.plugin_dirs = {CaseDir("good")};
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_THAT(Names(*registry), ElementsAre("testfam 2.0.0"));
  ASSERT_EQ(registry->rejected().size(), 1u);
  EXPECT_EQ(registry->rejected()[0].path, PluginFile("good", "test_good"));
  EXPECT_EQ(registry->rejected()[0].reason,
            "duplicate plugin name 'testfam' (already loaded from " +
                PluginFile("good_v2", "test_good_v2").string() + ")");
}

TEST(PluginDiscoveryTest, PluginDirBeatsEnvironment) {
  ScopedEnv env("CKPTBRIDGE_PLUGIN_PATH", CaseDir("good").string());
  DiscoveryOptions options = Isolated();
  options.use_environment = true;
  options.plugin_dirs = {CaseDir("good_v2")};
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_THAT(Names(*registry), ElementsAre("testfam 2.0.0"));
  EXPECT_THAT(registry->searched_dirs(), ElementsAre(CaseDir("good_v2"), CaseDir("good")));
}

TEST(PluginDiscoveryTest, EnvironmentEntriesInOrderAndEmptyOnesSkipped) {
  DiscoveryOptions options = Isolated();
  options.use_environment = true;
  {
    ScopedEnv env("CKPTBRIDGE_PLUGIN_PATH",
                  ":" + CaseDir("good_v2").string() + "::" + CaseDir("good").string() + ":");
    Result<PluginRegistry> registry = PluginRegistry::Discover(options);
    ASSERT_TRUE(registry.ok()) << registry.status().message();
    EXPECT_THAT(Names(*registry), ElementsAre("testfam 2.0.0"));
    EXPECT_THAT(registry->searched_dirs(), ElementsAre(CaseDir("good_v2"), CaseDir("good")));
  }
  {
    ScopedEnv env("CKPTBRIDGE_PLUGIN_PATH",
                  CaseDir("good").string() + ":" + CaseDir("good_v2").string());
    Result<PluginRegistry> registry = PluginRegistry::Discover(options);
    ASSERT_TRUE(registry.ok()) << registry.status().message();
    EXPECT_THAT(Names(*registry), ElementsAre("testfam 1.0.0"));
  }
}

TEST(PluginDiscoveryTest, EnvironmentIsIgnoredWhenDisabled) {
  ScopedEnv env("CKPTBRIDGE_PLUGIN_PATH", CaseDir("good").string());
  Result<PluginRegistry> registry = PluginRegistry::Discover(Isolated());
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_THAT(registry->plugins(), IsEmpty());
  EXPECT_THAT(registry->searched_dirs(), IsEmpty());
}

TEST(PluginDiscoveryTest, InstallDirIsNextToTheBinaryAndSearchedLast) {
  fs::path exe = fs::read_symlink("/proc/self/exe");
  EXPECT_EQ(InstallPluginDir(),
            (exe.parent_path() / ".." / "lib" / "ckptbridge" / "plugins").lexically_normal());

  ScopedEnv env("CKPTBRIDGE_PLUGIN_PATH", CaseDir("good").string());
  DiscoveryOptions options;  // environment and install dir on
  options.plugin_dirs = {CaseDir("other")};
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_THAT(registry->searched_dirs(),
              ElementsAre(CaseDir("other"), CaseDir("good"), InstallPluginDir()));
  ASSERT_GE(registry->plugins().size(), 2u);
  EXPECT_EQ(registry->plugins()[0].name, "otherfam");
  EXPECT_EQ(registry->plugins()[1].name, "testfam");
}

// --- Discovery: the current directory and relative paths --------------------------

TEST(PluginDiscoveryTest, TheCurrentDirectoryIsNeverSearched) {
  ScopedCwd cwd(CaseDir("good"));
  for (std::optional<std::string> value :
       {std::optional<std::string>(), std::optional<std::string>(""),
        std::optional<std::string>(":"), std::optional<std::string>("::")}) {
    ScopedEnv env("CKPTBRIDGE_PLUGIN_PATH", value);
    DiscoveryOptions options;
    options.use_install_dir = false;
    Result<PluginRegistry> registry = PluginRegistry::Discover(options);
    ASSERT_TRUE(registry.ok()) << registry.status().message();
    EXPECT_THAT(registry->plugins(), IsEmpty()) << value.value_or("(unset)");
    EXPECT_THAT(registry->searched_dirs(), IsEmpty());
  }
}

TEST(PluginDiscoveryTest, RelativeEnvironmentEntriesAreIgnored) {
  ScopedCwd cwd(CKB_TEST_PLUGIN_ROOT);
  ScopedEnv env("CKPTBRIDGE_PLUGIN_PATH", "good:.");
  DiscoveryOptions options = Isolated();
  options.use_environment = true;
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_THAT(registry->plugins(), IsEmpty());
  EXPECT_THAT(registry->searched_dirs(), IsEmpty());
  ASSERT_EQ(registry->rejected().size(), 2u);
  EXPECT_EQ(registry->rejected()[0].path, fs::path("good"));
  EXPECT_EQ(registry->rejected()[0].reason,
            "CKPTBRIDGE_PLUGIN_PATH entry is not an absolute path; relative entries are ignored");
}

TEST(PluginDiscoveryTest, RelativePluginDirIsTheUsersChoice) {
  ScopedCwd cwd(CKB_TEST_PLUGIN_ROOT);
  DiscoveryOptions options = Isolated();
  options.plugin_dirs = {"good"};
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_THAT(Names(*registry), ElementsAre("testfam 1.0.0"));
  EXPECT_THAT(registry->searched_dirs(), ElementsAre(CaseDir("good")));
  EXPECT_EQ(registry->plugins()[0].path, PluginFile("good", "test_good"));
}

// --- Discovery: duplicates ----------------------------------------------------------

TEST(PluginDiscoveryTest, TheSameFileIsLoadedOnce) {
  TempDir temp;
  fs::create_symlink(PluginFile("good", "test_good"), temp.path() / "libckptbridge_alias.so");
  DiscoveryOptions options = Isolated();
  options.plugin_files = {PluginFile("good", "test_good"), PluginFile("good", "test_good")};
  options.plugin_dirs = {CaseDir("good"), temp.path(), CaseDir("good")};
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_THAT(Names(*registry), ElementsAre("testfam 1.0.0"));
  EXPECT_THAT(registry->rejected(), IsEmpty());
}

TEST(PluginDiscoveryTest, SameNameInOneDirectoryFirstSortedWins) {
  DiscoveryOptions options = Isolated();
  options.plugin_dirs = {CaseDir("dupname")};
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_THAT(Names(*registry), ElementsAre("testfam 1.1.0"));
  ASSERT_EQ(registry->rejected().size(), 1u);
  EXPECT_EQ(registry->rejected()[0].path, PluginFile("dupname", "test_dup_b"));
  EXPECT_EQ(registry->rejected()[0].reason,
            "duplicate plugin name 'testfam' (already loaded from " +
                PluginFile("dupname", "test_dup_a").string() + ")");
}

TEST(PluginDiscoveryTest, SameNameGivenTwiceWithPluginIsFatal) {
  DiscoveryOptions options = Isolated();
  options.plugin_files = {PluginFile("good", "test_good"), PluginFile("good_v2", "test_good_v2")};
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_FALSE(registry.ok());
  EXPECT_EQ(registry.status().message(),
            PluginFile("good_v2", "test_good_v2").string() +
                ": duplicate plugin name 'testfam' (already loaded from " +
                PluginFile("good", "test_good").string() + ")");
}

TEST(PluginDiscoveryTest, AModelTypeClaimedTwiceGoesToTheFirstPlugin) {
  DiscoveryOptions options = Isolated();
  options.plugin_dirs = {CaseDir("good"), CaseDir("other")};
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_THAT(Names(*registry), ElementsAre("testfam 1.0.0", "otherfam 0.3.0"));
  EXPECT_EQ(registry->FindByModelType("test_b")->name, "testfam");
  EXPECT_EQ(registry->FindByModelType("test_c")->name, "otherfam");
  ASSERT_EQ(registry->rejected().size(), 1u);
  EXPECT_EQ(registry->rejected()[0].path, PluginFile("other", "test_other"));
  EXPECT_EQ(registry->rejected()[0].reason,
            "model type 'test_b' is already served by plugin 'testfam' (" +
                PluginFile("good", "test_good").string() +
                "), which is used for it; plugin 'otherfam' still serves its other model types");
}

// --- Lookups and summary ---------------------------------------------------------

TEST(PluginDiscoveryTest, Lookups) {
  DiscoveryOptions options = Isolated();
  options.plugin_dirs = {CaseDir("other"), CaseDir("good")};
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_EQ(registry->FindByModelType("test_b")->name, "otherfam");
  EXPECT_EQ(registry->FindByModelType("test_a")->name, "testfam");
  EXPECT_EQ(registry->FindByModelType("llama"), nullptr);
  EXPECT_EQ(registry->FindByArchitecture("TestBForCausalLM")->name, "testfam");
  EXPECT_EQ(registry->FindByArchitecture("OtherForCausalLM")->name, "otherfam");
  EXPECT_EQ(registry->FindByArchitecture("LlamaForCausalLM"), nullptr);
  EXPECT_EQ(registry->FindByPreset("other-small")->name, "otherfam");
  EXPECT_EQ(registry->FindByPreset("test-large")->name, "testfam");
  EXPECT_EQ(registry->FindByPreset("llama3.1-8b"), nullptr);
  EXPECT_EQ(registry->FindByName("testfam")->version, "1.0.0");
  EXPECT_EQ(registry->FindByName("test_a"), nullptr);
}

TEST(PluginDiscoveryTest, Summary) {
  DiscoveryOptions options = Isolated();
  options.plugin_dirs = {CaseDir("good"), CaseDir("other")};
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_EQ(registry->Summary(), "testfam 1.0.0 (test_a, test_b), otherfam 0.3.0 (test_b, test_c)");

  options.plugin_dirs = {CaseDir("does_not_exist"), CaseDir("junk")};
  registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_EQ(registry->Summary(),
            "no plugins were found (searched: " + CaseDir("does_not_exist").string() + ", " +
                CaseDir("junk").string() + ")");
  EXPECT_THAT(registry->searched_dirs(), ElementsAre(CaseDir("does_not_exist"), CaseDir("junk")));

  registry = PluginRegistry::Discover(Isolated());
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_EQ(registry->Summary(), "no plugins were found (searched: no directories)");
}

// --- Debug output ---------------------------------------------------------------------

TEST(PluginDiscoveryTest, DebugOutputExplainsEveryDecision) {
  DiscoveryOptions options = Isolated();
  std::ostringstream debug;
  options.debug = true;
  options.debug_stream = &debug;
  options.plugin_files = {PluginFile("good", "test_good")};
  options.plugin_dirs = {CaseDir("good"), CaseDir("does_not_exist"), CaseDir("abi_minor")};
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  const std::string good = PluginFile("good", "test_good").string();
  const std::string abi = PluginFile("abi_minor", "test_abi_minor").string();
  const std::string abi_text =
      std::to_string(CKPTBRIDGE_ABI_MAJOR) + "." + std::to_string(CKPTBRIDGE_ABI_MINOR);
  EXPECT_EQ(debug.str(),
            "ckptbridge: plugin candidate " + good + ": accepted (testfam 1.0.0, ABI " + abi_text +
                ", types test_a,test_b)\n"
                "ckptbridge: searching plugin dir " +
                CaseDir("good").string() +
                " (--plugin-dir)\n"
                "ckptbridge: plugin candidate " +
                good +
                ": skipped: the same file was already considered\n"
                "ckptbridge: plugin dir " +
                CaseDir("does_not_exist").string() +
                " (--plugin-dir): does not exist or is not a directory\n"
                "ckptbridge: searching plugin dir " +
                CaseDir("abi_minor").string() +
                " (--plugin-dir)\n"
                "ckptbridge: plugin candidate " +
                abi + ": rejected: plugin requires ABI " + std::to_string(CKPTBRIDGE_ABI_MAJOR) +
                ".99, this host provides ABI " + HostAbi() + " (a newer ckptbridge is needed)\n");
}

TEST(PluginDiscoveryTest, DebugOutputNotesAShadowedModelType) {
  DiscoveryOptions options = Isolated();
  std::ostringstream debug;
  options.debug = true;
  options.debug_stream = &debug;
  options.plugin_dirs = {CaseDir("good"), CaseDir("other")};
  Result<PluginRegistry> registry = PluginRegistry::Discover(options);
  ASSERT_TRUE(registry.ok()) << registry.status().message();
  EXPECT_THAT(debug.str(), HasSubstr("ckptbridge: plugin candidate " +
                                     PluginFile("other", "test_other").string() +
                                     ": note: model type 'test_b' is already served by plugin "
                                     "'testfam'"));
}

TEST(PluginDiscoveryTest, DebugOutputFollowsTheEnvironment) {
  DiscoveryOptions options = Isolated();
  options.plugin_dirs = {CaseDir("good")};
  std::ostringstream debug;
  options.debug_stream = &debug;
  {
    ScopedEnv env("CKPTBRIDGE_PLUGIN_DEBUG", "1");
    ASSERT_TRUE(PluginRegistry::Discover(options).ok());
    EXPECT_THAT(debug.str(), HasSubstr(": accepted (testfam 1.0.0"));
  }
  for (std::optional<std::string> off :
       {std::optional<std::string>(), std::optional<std::string>("0"),
        std::optional<std::string>("")}) {
    debug.str("");
    ScopedEnv env("CKPTBRIDGE_PLUGIN_DEBUG", off);
    ASSERT_TRUE(PluginRegistry::Discover(options).ok());
    EXPECT_EQ(debug.str(), "") << off.value_or("(unset)");
  }
}

}  // namespace
}  // namespace ckptbridge
