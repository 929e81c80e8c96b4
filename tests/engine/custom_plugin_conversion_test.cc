// A whole conversion through a plugin written against the raw C ABI (the
// host's test plugin "testfam", tests/plugin/plugins/good_plugin.cc), loaded
// with --plugin. It exercises what the llama mapping does not: split into two
// MaxText tensors, two stacked axes with a start and stride, vocabulary
// padding, an added constant, and a custom transform with two inputs - which
// also makes the rule set impossible to export.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "host/base/numeric.h"
#include "host/engine/staging.h"
#include "tests/testing/testing.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using testing::RunCli;
using testing::TempDir;

const fs::path kPlugin =
    fs::path(CKPTBRIDGE_BINARY_DIR) / "tests" / "plugins" / "good" / "libckptbridge_test_good.so";

std::vector<testing::HfTensorSpec> TestfamTensors() {
  // The embedding under the alternative prefix the plugin renames.
  std::vector<testing::HfTensorSpec> t = {{"orig.embed_tokens.weight", {16, 8}},
                                          {"lm_head.weight", {16, 8}},
                                          {"model.fp8.weight", {2, 2}},
                                          {"model.fp8.weight_scale_inv", {1, 1}}};
  for (int l : {0, 1}) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "self_attn.q_proj.weight", {8, 8}});
    t.push_back({p + "mlp.gate_up_proj.weight", {12, 8}});
  }
  // Experts of HF layers 1 and 3 (hf_start 1, stride 2).
  for (int l : {1, 3}) {
    for (int e = 0; e < 4; ++e) {
      t.push_back(
          {"model.layers." + std::to_string(l) + ".mlp.experts." + std::to_string(e) + ".w1.weight",
           {6, 8}});
    }
  }
  return t;
}

TEST(CustomPluginConversionTest, EveryOpKindLandsWhereTheRulesSay) {
  TempDir tmp;
  testing::WriteHfCheckpoint(tmp / "src", {{"model_type", "test_a"}, {"num_layers", 2}},
                             TestfamTensors(), DType::kF32, /*seed=*/3);
  testing::CliRun run =
      RunCli({"convert", "--to", "maxtext", "--quiet", "--save-dtype", "float32", "--plugin",
              kPlugin.string(), (tmp / "src").string(), (tmp / "mt").string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto hf = testing::ReadHf(tmp / "src");
  const auto mt = testing::ReadOrbax(tmp / "mt");
  auto h = [&](const std::string& n) -> const std::vector<float>& { return hf.at(n).data; };
  auto m = [&](const std::string& n) -> const testing::Values& {
    return mt.at("params.params." + n);
  };

  // Read through the plugin's rename: orig.* is model.*.
  EXPECT_EQ(m("token_embedder.embedding").data, h("orig.embed_tokens.weight"));

  // query [8, L, 2, 4]: transpose, split heads, scale 0.5.
  const auto& query = m("decoder.layers.self_attention.query.kernel");
  ASSERT_EQ(query.shape, (Shape{8, 2, 2, 4}));
  for (int l = 0; l < 2; ++l)
    for (int e = 0; e < 8; ++e)
      for (int k = 0; k < 8; ++k)
        EXPECT_EQ(
            query.data[((e * 2 + l) * 2 + k / 4) * 4 + k % 4],
            0.5f * h("model.layers." + std::to_string(l) + ".self_attn.q_proj.weight")[k * 8 + e]);

  // gate_up [12, 8] -> transpose [8, 12] -> split into wi_0/wi_1 [8, L, 6].
  const auto& wi0 = m("decoder.layers.mlp.wi_0.kernel");
  const auto& wi1 = m("decoder.layers.mlp.wi_1.kernel");
  for (int l = 0; l < 2; ++l) {
    const auto& src = h("model.layers." + std::to_string(l) + ".mlp.gate_up_proj.weight");
    for (int e = 0; e < 8; ++e)
      for (int j = 0; j < 6; ++j) {
        EXPECT_EQ(wi0.data[(e * 2 + l) * 6 + j], src[j * 8 + e]);
        EXPECT_EQ(wi1.data[(e * 2 + l) * 6 + j], src[(6 + j) * 8 + e]);
      }
  }

  // Experts [4, L, 8, 6]: slice (x, i) is HF layer 1 + 2i, expert x, transposed.
  const auto& experts = m("decoder.layers.moe.wi_0");
  ASSERT_EQ(experts.shape, (Shape{4, 2, 8, 6}));
  for (int x = 0; x < 4; ++x)
    for (int i = 0; i < 2; ++i) {
      const auto& src = h("model.layers." + std::to_string(1 + 2 * i) + ".mlp.experts." +
                          std::to_string(x) + ".w1.weight");
      for (int e = 0; e < 8; ++e)
        for (int f = 0; f < 6; ++f)
          EXPECT_EQ(experts.data[((x * 2 + i) * 8 + e) * 6 + f], src[f * 8 + e]);
    }

  // lm_head [16, 8] -> pad rows to 20 -> transpose [8, 20] -> + 1.5.
  const auto& head = m("decoder.logits_dense.kernel");
  ASSERT_EQ(head.shape, (Shape{8, 20}));
  for (int e = 0; e < 8; ++e)
    for (int v = 0; v < 20; ++v) {
      const float want = (v < 16 ? h("lm_head.weight")[v * 8 + e] : 0.0f) + 1.5f;
      EXPECT_EQ(head.data[e * 20 + v], want);
    }

  // The custom transform doubles its first input.
  const auto& fp8 = m("decoder.fp8.kernel");
  for (int i = 0; i < 4; ++i) EXPECT_EQ(fp8.data[i], 2.0f * h("model.fp8.weight")[i]);

  // The custom op has no inverse, so this rule set cannot go back to HF.
  testing::CliRun back = RunCli({"convert", "--to", "hf", "--plugin", kPlugin.string(),
                                 (tmp / "mt").string(), (tmp / "hf").string()});
  EXPECT_EQ(back.exit_code, 2);
  EXPECT_NE(
      back.err.find("rule for 'decoder.fp8.kernel': cannot be exported: custom(7) has no inverse"),
      std::string::npos)
      << back.err;
  EXPECT_FALSE(fs::exists(tmp / "hf"));
}

TEST(CustomPluginConversionTest, BothNamesOfOneTensorAreRefused) {
  TempDir tmp;
  std::vector<testing::HfTensorSpec> tensors = TestfamTensors();
  tensors.push_back({"model.embed_tokens.weight", {16, 8}});
  testing::WriteHfCheckpoint(tmp / "src", {{"model_type", "test_a"}, {"num_layers", 2}}, tensors,
                             DType::kF32, /*seed=*/3);
  testing::CliRun run = RunCli({"convert", "--to", "maxtext", "--plugin", kPlugin.string(),
                                (tmp / "src").string(), (tmp / "mt").string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find("has both 'model.embed_tokens.weight' and 'orig.embed_tokens.weight', "
                         "which name the same tensor 'model.embed_tokens.weight'"),
            std::string::npos)
      << run.err;
}

TEST(CustomPluginConversionTest, AFailureWhileWritingLeavesNothing) {
  // The custom transform refuses non-f32 inputs, so the run fails midway,
  // after other slices have been written to the staging directory.
  TempDir tmp;
  testing::WriteHfCheckpoint(tmp / "src", {{"model_type", "test_a"}, {"num_layers", 2}},
                             TestfamTensors(), DType::kBF16, /*seed=*/5);
  testing::CliRun run = RunCli({"convert", "--to", "maxtext", "--quiet", "--plugin",
                                kPlugin.string(), (tmp / "src").string(), (tmp / "mt").string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(
      run.err.find("plugin 'testfam': custom transform 7: input 0 has dtype 11, expected f32"),
      std::string::npos)
      << run.err;
  EXPECT_FALSE(fs::exists(tmp / "mt"));
  for (const auto& entry : fs::directory_iterator(tmp.path())) {
    EXPECT_FALSE(engine::IsStagingName(entry.path().filename().string())) << entry.path();
  }
}

TEST(CustomPluginConversionTest, PluginFileThatDoesNotLoadIsFatal) {
  TempDir tmp;
  testing::CliRun run =
      RunCli({"convert", "--to", "maxtext", "--plugin", (tmp / "nope.so").string(),
              (testing::FixtureDir() / "hf" / "mlxd-tiny_llama3").string(), (tmp / "mt").string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find("nope.so"), std::string::npos) << run.err;
}

}  // namespace
}  // namespace ckptbridge
