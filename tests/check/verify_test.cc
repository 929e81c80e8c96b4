// `ckptbridge verify` end to end: real fixtures converted both ways, a
// corrupted source, the wrong source, and every planted mapping bug of the
// test plugin (tests/check/plugins/planted_plugin.cc), which a symmetric
// round trip hides and the axis fingerprints must catch.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "host/base/numeric.h"
#include "host/formats/safetensors/reader.h"
#include "host/formats/safetensors/writer.h"
#include "tests/check/check_testing.h"
#include "tests/testing/testing.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::CliRun;
using testing::RunCli;
using testing::TempDir;

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

std::string Show(const CliRun& run) { return "out:\n" + run.out + "\nerr:\n" + run.err; }

TEST(VerifyTest, RealLlamaFixtureBothWaysIsBitExact) {
  TempDir tmp;
  const fs::path src = testing::FixtureDir() / "hf" / "mlxd-tiny_llama3";
  const fs::path mt = tmp.path() / "mt", hf = tmp.path() / "hf";
  ASSERT_EQ(RunCli({"convert", "-q", "--to", "maxtext", src, mt}).exit_code, 0);
  // A budget smaller than any slice still works: slices run one at a time.
  CliRun run = RunCli({"verify", "-q", "--max-memory", "1KiB", src, mt});
  EXPECT_EQ(run.exit_code, 0) << Show(run);
  // bf16 -> bf16 with layout ops and a power-of-two query scale (head_dim 16).
  // 19 HF tensors through the inverse, the scaled query forward (one entry
  // for its stacked MaxText tensor).
  EXPECT_TRUE(Contains(run.out, "20 tensors")) << run.out;
  EXPECT_TRUE(Contains(run.out, "20 bit-exact, 0 within rounding, 0 mismatched")) << run.out;
  EXPECT_TRUE(Contains(run.out, "verify: OK")) << run.out;

  ASSERT_EQ(RunCli({"convert", "-q", "--to", "hf", mt, hf}).exit_code, 0);
  run = RunCli({"verify", "-q", mt, hf});
  EXPECT_EQ(run.exit_code, 0) << Show(run);
  EXPECT_TRUE(Contains(run.out, "0 within rounding, 0 mismatched")) << run.out;
}

TEST(VerifyTest, Float32OutputIsLosslessToo) {
  TempDir tmp;
  const fs::path src = testing::FixtureDir() / "hf" / "mlxd-tiny_qwen3";
  const fs::path mt = tmp.path() / "mt";
  ASSERT_EQ(
      RunCli({"convert", "-q", "--to", "maxtext", "--save-dtype", "float32", src, mt}).exit_code,
      0);
  const CliRun run = RunCli({"verify", "-q", src, mt});
  EXPECT_EQ(run.exit_code, 0) << Show(run);
  EXPECT_TRUE(Contains(run.out, " 0 mismatched")) << run.out;
}

TEST(VerifyTest, CorruptedSourceTensorIsAMismatchNamingIt) {
  TempDir tmp;
  const fs::path original = testing::FixtureDir() / "hf" / "mlxd-tiny_llama3";
  const fs::path src = tmp.path() / "src", mt = tmp.path() / "mt";
  fs::copy(original, src, fs::copy_options::recursive);
  ASSERT_EQ(RunCli({"convert", "-q", "--to", "maxtext", src, mt}).exit_code, 0);
  check_testing::FlipByte(src / "model.safetensors", "model.layers.1.mlp.down_proj.weight", 7);
  const CliRun run = RunCli({"verify", "-q", src, mt});
  EXPECT_EQ(run.exit_code, 1) << Show(run);
  EXPECT_TRUE(Contains(run.out, "model.layers.1.mlp.down_proj.weight")) << run.out;
  EXPECT_TRUE(Contains(run.out, "MISMATCH")) << run.out;
  EXPECT_TRUE(Contains(run.out, "beyond bit-exact")) << run.out;
  EXPECT_TRUE(Contains(run.out, "verify: FAILED")) << run.out;
}

TEST(VerifyTest, WrongSourceFamilyShowsWhichTensorsDiffer) {
  // tiny_mistral holds the same bytes as tiny_llama3, but Llama 3 RoPE
  // interleaves q and k for MaxText and Mistral does not.
  TempDir tmp;
  const fs::path mt = tmp.path() / "mt";
  ASSERT_EQ(RunCli({"convert", "-q", "--to", "maxtext",
                    testing::FixtureDir() / "hf" / "mlxd-tiny_mistral", mt})
                .exit_code,
            0);
  const CliRun run =
      RunCli({"verify", "-q", testing::FixtureDir() / "hf" / "mlxd-tiny_llama3", mt});
  EXPECT_EQ(run.exit_code, 1) << Show(run);
  EXPECT_TRUE(Contains(run.out, "self_attention.query.kernel")) << run.out;
  EXPECT_TRUE(Contains(run.out, "k_proj.weight")) << run.out;
  EXPECT_FALSE(Contains(run.out, "v_proj.weight")) << run.out;
}

TEST(VerifyTest, BadInputIsExitCode2) {
  TempDir tmp;
  const fs::path llama = testing::FixtureDir() / "hf" / "mlxd-tiny_llama3";
  CliRun run = RunCli({"verify", llama});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(Contains(run.err, "expected SOURCE and CONVERTED")) << run.err;
  run = RunCli({"verify", llama, testing::FixtureDir() / "hf" / "mlxd-tiny_qwen3"});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(Contains(run.err, "is a Hugging Face folder and")) << run.err;
  run = RunCli({"verify", llama, tmp.path() / "nothing"});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(Contains(run.err, "neither a Hugging Face folder nor an Orbax")) << run.err;
  run = RunCli({"verify", "--threads", "-1", llama, llama});
  EXPECT_EQ(run.exit_code, 2);
  run = RunCli({"verify", "--max-memory", "much", llama, llama});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(Contains(run.err, "--max-memory")) << run.err;
}

TEST(VerifyTest, ExtraOutputTensorsAreAStructureMismatch) {
  // Qwen3 converted, then verified against the Llama fixture: the plugin
  // choice differs, so the rules produce other names.
  TempDir tmp;
  const fs::path mt = tmp.path() / "mt";
  ASSERT_EQ(RunCli({"convert", "-q", "--to", "maxtext",
                    testing::FixtureDir() / "hf" / "mlxd-tiny_qwen3", mt})
                .exit_code,
            0);
  const CliRun run =
      RunCli({"verify", "-q", testing::FixtureDir() / "hf" / "mlxd-tiny_llama3", mt});
  EXPECT_EQ(run.exit_code, 1) << Show(run);
  EXPECT_TRUE(Contains(run.out, "structure:")) << run.out;
  EXPECT_TRUE(Contains(run.out, "but no rule produces it")) << run.out;
}

// The planted-bug plugin ---------------------------------------------------

TEST(PlantedTest, CorrectMappingVerifiesBothWays) {
  TempDir tmp;
  const fs::path src = tmp.path() / "src", mt = tmp.path() / "mt", hf = tmp.path() / "hf";
  check_testing::WritePlanted(src, "none", /*fp8=*/true);
  CliRun run =
      RunCli({"convert", "-q", "--plugin", CKB_PLANTED_PLUGIN, "--to", "maxtext", src, mt});
  ASSERT_EQ(run.exit_code, 0) << Show(run);
  run = RunCli({"verify", "-q", "--plugin", CKB_PLANTED_PLUGIN, src, mt});
  EXPECT_EQ(run.exit_code, 0) << Show(run);
  // head_dim 8: the query scale 1/sqrt(8) rounds; the FP8 weight is
  // dequantized; both within 1 ULP of bfloat16.
  EXPECT_TRUE(Contains(run.out, "decoder.layers.mlp.extra.kernel")) << run.out;
  EXPECT_TRUE(Contains(run.out, "decoder.layers.self_attention.query.kernel  forward")) << run.out;
  EXPECT_TRUE(Contains(run.out, "ok (rounding)")) << run.out;
  EXPECT_FALSE(Contains(run.out, "MISMATCH")) << run.out;
  EXPECT_TRUE(Contains(run.out, "verify: OK")) << run.out;

  run = RunCli({"convert", "-q", "--plugin", CKB_PLANTED_PLUGIN, "--to", "hf", mt, hf});
  ASSERT_EQ(run.exit_code, 0) << Show(run);
  run = RunCli({"verify", "-q", "--plugin", CKB_PLANTED_PLUGIN, mt, hf});
  EXPECT_EQ(run.exit_code, 0) << Show(run);
}

struct PlantedCase {
  const char* bug;
  const char* tensor;   // the MaxText tensor verify must name
  const char* axis;     // "axis N (meaning)"
  const char* because;  // what the message must say
};

class PlantedBugTest : public ::testing::TestWithParam<PlantedCase> {};

TEST_P(PlantedBugTest, VerifyCatchesWhatTheRoundTripHides) {
  const PlantedCase& c = GetParam();
  TempDir tmp;
  const fs::path src = tmp.path() / "src", mt = tmp.path() / "mt", hf = tmp.path() / "hf";
  check_testing::WritePlanted(src, c.bug, /*fp8=*/true);
  CliRun run =
      RunCli({"convert", "-q", "--plugin", CKB_PLANTED_PLUGIN, "--to", "maxtext", src, mt});
  ASSERT_EQ(run.exit_code, 0) << Show(run);
  run = RunCli({"verify", "-q", "--plugin", CKB_PLANTED_PLUGIN, src, mt});
  EXPECT_EQ(run.exit_code, 1) << Show(run);
  // The values round-trip: the bug is symmetric.
  EXPECT_TRUE(Contains(run.out, " 0 mismatched")) << run.out;
  EXPECT_TRUE(Contains(run.out, "fingerprint mismatches")) << run.out;
  EXPECT_TRUE(Contains(run.out, std::string(c.tensor) + " " + c.axis)) << run.out;
  EXPECT_TRUE(Contains(run.out, c.because)) << run.out;
  EXPECT_TRUE(Contains(run.out, "verify: FAILED")) << run.out;

  if (std::string(c.bug) == "fp8") return;  // export writes dequantized weights
  // Exported back through the same plugin, HF matches the source exactly -
  // and verify of the export still fails on the fingerprints.
  run = RunCli({"convert", "-q", "--plugin", CKB_PLANTED_PLUGIN, "--to", "hf", mt, hf});
  ASSERT_EQ(run.exit_code, 0) << Show(run);
  const auto original = testing::ReadHfBytes(src);
  const auto exported = testing::ReadHfBytes(hf);
  EXPECT_EQ(original.at("model.layers.1.mlp.down_proj.weight"),
            exported.at("model.layers.1.mlp.down_proj.weight"));
  EXPECT_EQ(original.at("model.layers.1.mlp.gate_up_proj.weight"),
            exported.at("model.layers.1.mlp.gate_up_proj.weight"));
  run = RunCli({"verify", "-q", "--plugin", CKB_PLANTED_PLUGIN, mt, hf});
  EXPECT_EQ(run.exit_code, 1) << Show(run);
  EXPECT_TRUE(Contains(run.out, std::string(c.tensor) + " " + c.axis)) << run.out;
}

INSTANTIATE_TEST_SUITE_P(
    Bugs, PlantedBugTest,
    ::testing::Values(PlantedCase{"transpose", "decoder.layers.mlp.wo.kernel", "axis 0 (mlp)",
                                  "transposed"},
                      PlantedCase{"gate_up", "decoder.layers.mlp.wi_1.kernel", "axis 1 (mlp)",
                                  "gate and up are swapped"},
                      PlantedCase{"heads", "decoder.layers.self_attention.query.kernel",
                                  "axis 1 (heads)", "permuted axis"},
                      PlantedCase{"fp8", "decoder.layers.mlp.extra.kernel", "axis 0 (embed)",
                                  "mlp.extra_proj.weight axis"}),
    [](const ::testing::TestParamInfo<PlantedCase>& info) { return std::string(info.param.bug); });

}  // namespace
}  // namespace ckptbridge
