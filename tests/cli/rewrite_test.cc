// `strip` and `restack`: MaxText -> MaxText, parameters only, moved bit for
// bit. A restacked checkpoint must be identical, array for array, to the one
// converted directly in the other layout.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "host/base/file.h"
#include "tests/testing/testing.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::CliRun;
using testing::RunCli;
using testing::TempDir;

const fs::path kLlama = testing::FixtureDir() / "hf" / "mlxd-tiny_llama3";

// The parameters of an Orbax item as raw values, by canonical Orbax name.
std::map<std::string, testing::Values> Params(const fs::path& item) {
  std::map<std::string, testing::Values> all = testing::ReadOrbax(item), params;
  for (auto& [name, values] : all) {
    if (name.rfind("params.params.", 0) == 0) params[name] = std::move(values);
  }
  return params;
}

void ExpectSameParams(const fs::path& a, const fs::path& b) {
  const auto pa = Params(a), pb = Params(b);
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& [name, values] : pa) {
    ASSERT_TRUE(pb.count(name)) << name;
    EXPECT_EQ(pb.at(name).dtype, values.dtype) << name;
    EXPECT_EQ(pb.at(name).shape, values.shape) << name;
    EXPECT_EQ(pb.at(name).data, values.data) << name;
  }
}

json MixtralConfig() {
  return {{"model_type", "mixtral"},     {"vocab_size", 40},       {"hidden_size", 16},
          {"intermediate_size", 12},     {"num_hidden_layers", 3}, {"num_attention_heads", 4},
          {"num_key_value_heads", 2},    {"num_local_experts", 3}, {"num_experts_per_tok", 2},
          {"tie_word_embeddings", false}};
}

class RestackTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RestackTest, BothWaysEqualsConvertingDirectly) {
  TempDir tmp;
  fs::path src = kLlama;
  if (GetParam() == "mixtral") {
    src = tmp / "src";
    const json config = MixtralConfig();
    testing::WriteHfCheckpoint(src, config, testing::LlamaFamilyTensors(config), DType::kBF16, 9);
  }
  for (const std::string layout : {"--scan-layers", "--no-scan-layers"}) {
    CliRun run = RunCli({"convert", "--to", "maxtext", "--quiet", layout, src.string(),
                         (tmp / ("direct" + layout)).string()});
    ASSERT_EQ(run.exit_code, 0) << run.err;
  }
  CliRun down = RunCli({"restack", "--quiet", "--no-scan-layers",
                        (tmp / "direct--scan-layers").string(), (tmp / "unscanned").string()});
  ASSERT_EQ(down.exit_code, 0) << down.err;
  EXPECT_NE(down.out.find("unscanned"), std::string::npos) << down.out;
  ExpectSameParams(tmp / "unscanned", tmp / "direct--no-scan-layers");

  CliRun up = RunCli({"restack", "--quiet", "--scan-layers", (tmp / "unscanned").string(),
                      (tmp / "scanned").string()});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  ExpectSameParams(tmp / "scanned", tmp / "direct--scan-layers");

  // The result knows its layout and converts back to the source, bit for bit.
  CliRun hf = RunCli(
      {"convert", "--to", "hf", "--quiet", (tmp / "unscanned").string(), (tmp / "hf").string()});
  ASSERT_EQ(hf.exit_code, 0) << hf.err;
  EXPECT_EQ(testing::ReadHfBytes(tmp / "hf"), testing::ReadHfBytes(src));
}

INSTANTIATE_TEST_SUITE_P(Families, RestackTest, ::testing::Values("llama", "mixtral"));

TEST(StripTest, TrainingCheckpointBecomesParametersOnly) {
  TempDir tmp;
  ASSERT_EQ(RunCli({"convert", "--to", "maxtext", "--quiet", "--no-scan-layers", kLlama.string(),
                    (tmp / "linen").string()})
                .exit_code,
            0);
  testing::RelayoutMaxText(tmp / "linen" / "0" / "items", tmp / "train", engine::TreeKind::kNnxSft);

  CliRun run = RunCli({"strip", (tmp / "train").string(), (tmp / "inference").string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.err.find("skipped 2 tensors (training state, not a model parameter)"),
            std::string::npos)
      << run.err;
  const auto all = testing::ReadOrbax(tmp / "inference");
  for (const auto& [name, values] : all) {
    EXPECT_TRUE(name.rfind("params.params.", 0) == 0 || name == "step") << name;
  }
  ExpectSameParams(tmp / "inference", tmp / "linen");
  // The step counter survives; the layout is recorded.
  EXPECT_EQ(all.at("step").data, std::vector<float>{1200.0f});
  json metadata = json::parse(*ReadFile(tmp / "inference" / "0" / "items" / "_METADATA"));
  EXPECT_EQ(metadata["custom_metadata"]["scan_layers"], false);
  EXPECT_TRUE(metadata["tree_metadata"].contains("('opt_state',)"));
}

TEST(StripTest, ChangingTheLayoutOfAForeignCheckpointNeedsTheModel) {
  TempDir tmp;
  ASSERT_EQ(RunCli({"convert", "--to", "maxtext", "--quiet", "--no-scan-layers", kLlama.string(),
                    (tmp / "linen").string()})
                .exit_code,
            0);
  testing::RelayoutMaxText(tmp / "linen" / "0" / "items", tmp / "train", engine::TreeKind::kNnxRl);
  CliRun no_model =
      RunCli({"strip", "--scan-layers", (tmp / "train").string(), (tmp / "out").string()});
  EXPECT_EQ(no_model.exit_code, 2);
  EXPECT_NE(no_model.err.find("pass --hf-config FILE"), std::string::npos) << no_model.err;
  EXPECT_FALSE(fs::exists(tmp / "out"));

  CliRun with_config =
      RunCli({"strip", "--quiet", "--scan-layers", "--hf-config", (kLlama / "config.json").string(),
              (tmp / "train").string(), (tmp / "out").string()});
  ASSERT_EQ(with_config.exit_code, 0) << with_config.err;
  ASSERT_EQ(
      RunCli({"convert", "--to", "maxtext", "--quiet", kLlama.string(), (tmp / "scanned").string()})
          .exit_code,
      0);
  ExpectSameParams(tmp / "out", tmp / "scanned");
}

TEST(RestackTest, UsageErrors) {
  TempDir tmp;
  CliRun no_layout = RunCli({"restack", (tmp / "a").string(), (tmp / "b").string()});
  EXPECT_EQ(no_layout.exit_code, 2);
  EXPECT_NE(no_layout.err.find("--scan-layers or --no-scan-layers is required"), std::string::npos);
  CliRun missing = RunCli({"restack", "--scan-layers", (tmp / "a").string(), (tmp / "b").string()});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("no such file or directory"), std::string::npos) << missing.err;
  CliRun level = RunCli({"restack", "--scan-layers", "--zstd-level", "-1", (tmp / "a").string(),
                         (tmp / "b").string()});
  EXPECT_EQ(level.exit_code, 2);
  EXPECT_NE(level.err.find("--zstd-level must be 1 to 22, got -1"), std::string::npos) << level.err;
  EXPECT_EQ(RunCli({"strip", "--help"}).exit_code, 0);
  EXPECT_NE(RunCli({"restack", "--help"}).out.find("Usage: ckptbridge restack"), std::string::npos);
}

}  // namespace
}  // namespace ckptbridge
