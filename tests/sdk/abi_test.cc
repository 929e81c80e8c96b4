// ABI evolution, proven: a plugin built against the frozen ABI 1.0 SDK
// (tests/sdk/abi_v1_0) loads in this host and converts both ways; a plugin
// requiring a newer minor is refused naming both versions; the 1.1 sample
// configs are read and validated.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "host/engine/convert.h"
#include "host/formats/safetensors/reader.h"
#include "host/formats/safetensors/writer.h"
#include "host/plugin/adapter.h"
#include "host/plugin/loader.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

fs::path SdkPlugin(const std::string& dir, const std::string& name) {
  return fs::path(CKB_SDK_PLUGIN_ROOT) / dir / ("libckptbridge_" + name + ".so");
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "ckb_abi_test_XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

TEST(AbiTest, TheHostIsAtAbi12) {
  EXPECT_EQ(CKPTBRIDGE_ABI_MAJOR, 1u);
  EXPECT_EQ(CKPTBRIDGE_ABI_MINOR, 2u);
}

TEST(AbiTest, AnAbi10PluginLoads) {
  Result<LoadedPlugin> plugin = LoadPlugin(SdkPlugin("old", "old"));
  ASSERT_TRUE(plugin.ok()) << plugin.status().message();
  EXPECT_EQ(plugin->name, "oldfam");
  EXPECT_EQ(plugin->version, "0.9.0");
  EXPECT_EQ(plugin->abi_major, 1u);
  EXPECT_EQ(plugin->abi_minor, 0u);
  // Its descriptor ends where ABI 1.0 ended: the host must not read further.
  EXPECT_EQ(plugin->descriptor->struct_size,
            offsetof(ckb_plugin_descriptor, vtable) + sizeof(void*));
  EXPECT_TRUE(plugin->sample_configs.empty());
}

TEST(AbiTest, AnAbi10PluginConvertsBothWays) {
  TempDir dir;
  const fs::path hf = dir.path() / "hf";
  fs::create_directories(hf);
  {
    std::ofstream config(hf / "config.json");
    config << R"({"model_type": "oldfam", "vocab_size": 6, "hidden_size": 4,
                  "num_hidden_layers": 2, "torch_dtype": "float32"})";
  }
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> value(-1, 1);
  auto tensor = [&](std::string name, Shape shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> data(static_cast<size_t>(n));
    for (float& x : data) x = value(rng);
    return safetensors::TensorWithData{
        {std::move(name), DType::kF32, std::move(shape)},
        std::string(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float))};
  };
  ASSERT_TRUE(safetensors::WriteCheckpoint(hf, {tensor("model.embed_tokens.weight", {6, 4}),
                                                tensor("model.norm.weight", {4}),
                                                tensor("model.layers.0.proj.weight", {4, 4}),
                                                tensor("model.layers.1.proj.weight", {4, 4})})
                  .ok());

  DiscoveryOptions discovery;
  discovery.plugin_files = {SdkPlugin("old", "old")};
  discovery.use_environment = false;
  discovery.use_install_dir = false;
  Result<PluginRegistry> registry = PluginRegistry::Discover(discovery);
  ASSERT_TRUE(registry.ok()) << registry.status().message();

  engine::ConvertOptions to_mt;
  to_mt.source = hf;
  to_mt.destination = dir.path() / "mt";
  to_mt.save_dtype = "float32";
  Result<engine::ConvertSummary> forward = engine::Convert(to_mt, *registry, {});
  ASSERT_TRUE(forward.ok()) << forward.status().message();
  EXPECT_EQ(forward->plugin, "oldfam 0.9.0");

  engine::ConvertOptions to_hf;
  to_hf.direction = engine::Direction::kToHf;
  to_hf.source = to_mt.destination;
  to_hf.destination = dir.path() / "hf-back";
  to_hf.save_dtype = "float32";
  Result<engine::ConvertSummary> backward = engine::Convert(to_hf, *registry, {});
  ASSERT_TRUE(backward.ok()) << backward.status().message();

  auto read = [](const fs::path& path) {
    std::map<std::string, std::string> bytes;
    auto checkpoint = safetensors::Checkpoint::Open(path);
    EXPECT_TRUE(checkpoint.ok());
    for (const auto& t : (*checkpoint)->tensors()) {
      const auto* data = reinterpret_cast<const char*>(t.file->Data(*t.info));
      bytes[t.info->name] = std::string(data, t.info->num_bytes());
    }
    return bytes;
  };
  EXPECT_EQ(read(hf), read(to_hf.destination));
}

TEST(AbiTest, APluginRequiringANewerMinorIsRefusedNamingBothVersions) {
  fs::path file = SdkPlugin("faulty_needs_newer", "faulty_needs_newer");
  Result<LoadedPlugin> plugin = LoadPlugin(file);
  ASSERT_FALSE(plugin.ok());
  EXPECT_EQ(plugin.status().code(), StatusCode::kUnsupported);
  EXPECT_EQ(plugin.status().message(),
            file.string() +
                ": plugin requires ABI 1.3, this host provides ABI 1.2 (a newer "
                "ckptbridge is needed)");
}

TEST(AbiTest, SampleConfigsAreCopied) {
  Result<LoadedPlugin> plugin = LoadPlugin(SdkPlugin("wren", "wren"));
  ASSERT_TRUE(plugin.ok()) << plugin.status().message();
  ASSERT_EQ(plugin->sample_configs.size(), 2u);
  EXPECT_EQ(plugin->sample_configs[0].model_type, "wren");
  EXPECT_EQ(plugin->sample_configs[0].variant, "untied");
  EXPECT_EQ(plugin->sample_configs[1].variant, "tied");
  EXPECT_THAT(plugin->sample_configs[1].config_json, HasSubstr("\"tie_word_embeddings\": true"));
  // Providing samples does not raise the minor the plugin requires.
  EXPECT_EQ(plugin->abi_minor, 0u);
}

TEST(AbiTest, ASampleForAnUnservedModelTypeIsRejected) {
  fs::path file = SdkPlugin("faulty_sample_type", "faulty_sample_type");
  Result<LoadedPlugin> plugin = LoadPlugin(file);
  ASSERT_FALSE(plugin.ok());
  EXPECT_EQ(plugin.status().message(), file.string() +
                                           ": plugin 'faulty' sample_configs[1] is for model type "
                                           "'faulty_moe', which the plugin does not serve");
}

TEST(AbiTest, TwoSamplesWithOneVariantLabelAreRejected) {
  fs::path file = SdkPlugin("faulty_sample_dup", "faulty_sample_dup");
  Result<LoadedPlugin> plugin = LoadPlugin(file);
  ASSERT_FALSE(plugin.ok());
  EXPECT_EQ(plugin.status().message(),
            file.string() +
                ": plugin 'faulty' has two sample configs for model type 'faulty' variant 'base'");
}

// The host's side of the negative cases the conformance kit reports: each is
// a clear error from the adapter or the conversion, never a crash.
TEST(AbiTest, ARuleFunctionThatThrowsIsAnError) {
  Result<LoadedPlugin> plugin = LoadPlugin(SdkPlugin("faulty_rules_throw", "faulty_rules_throw"));
  ASSERT_TRUE(plugin.ok()) << plugin.status().message();
  auto adapter = Adapter::Create(*plugin, "faulty",
                                 R"({"vocab_size": 4, "hidden_size": 2, "num_hidden_layers": 1})");
  ASSERT_TRUE(adapter.ok()) << adapter.status().message();
  Result<RuleSet> rules = (*adapter)->Rules(R"({"direction": "to_maxtext"})");
  ASSERT_FALSE(rules.ok());
  EXPECT_EQ(rules.status().code(), StatusCode::kInternal);
  EXPECT_EQ(rules.status().message(),
            "plugin 'faulty': internal error: faulty: rules exploded for layer 7");
}

TEST(AbiTest, ACustomTransformErrorIsReported) {
  Result<LoadedPlugin> plugin = LoadPlugin(SdkPlugin("faulty_custom_fails", "faulty_custom_fails"));
  ASSERT_TRUE(plugin.ok()) << plugin.status().message();
  auto adapter = Adapter::Create(*plugin, "faulty",
                                 R"({"vocab_size": 4, "hidden_size": 2, "num_hidden_layers": 1})");
  ASSERT_TRUE(adapter.ok()) << adapter.status().message();
  std::vector<float> in(4), out(4);
  Status status = (*adapter)->ApplyCustom(7, {{DType::kF32, {2, 2}, in.data()}},
                                          {{DType::kF32, {2, 2}, out.data()}});
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(status.message(), "plugin 'faulty': custom transform 7: faulty scale tensor missing");
}

}  // namespace
}  // namespace ckptbridge
