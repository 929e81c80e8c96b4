// The precision policy end to end, through a plugin built with the SDK whose
// rule keeps `a_log` in float32 (plugins/precision_plugin.cc, ABI 1.2),
// loaded with --plugin: kept tensors stay float32 in both directions and in
// `plan`; an overflow to Inf fails the conversion (exit 2, no destination)
// unless --allow-lossy, and the cast audit reports what the rounding did.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "host/base/file.h"
#include "host/base/numeric.h"
#include "host/engine/plan.h"
#include "host/formats/safetensors/writer.h"
#include "tests/testing/testing.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::RunCli;
using testing::TempDir;

const fs::path kPlugin = fs::path(CKPTBRIDGE_BINARY_DIR) / "tests" / "plugins" / "precision" /
                         "libckptbridge_test_precision.so";
constexpr float kInf = std::numeric_limits<float>::infinity();

// An HF checkpoint of family "precision": w [4, 3] and a_log [2], as f32.
void WriteSource(const fs::path& dir, const std::vector<float>& w,
                 const std::vector<float>& a_log) {
  fs::create_directories(dir);
  const json config = {{"model_type", "precision"}, {"rows", 4}, {"cols", 3}, {"heads", 2}};
  ASSERT_TRUE(WriteFile(dir / "config.json", config.dump()).ok());
  auto bytes = [](const std::vector<float>& v) {
    return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  };
  const std::vector<safetensors::TensorWithData> tensors = {
      {{"model.w.weight", DType::kF32, {4, 3}}, bytes(w)},
      {{"model.a_log", DType::kF32, {2}}, bytes(a_log)}};
  const Status written = safetensors::WriteCheckpoint(dir, tensors, uint64_t{1} << 30);
  ASSERT_TRUE(written.ok()) << written.message();
}

std::vector<std::string> Entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// The line of `text` that mentions `needle`.
std::string LineWith(const std::string& text, const std::string& needle) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.find(needle) != std::string::npos) return line;
  }
  return "";
}

// 0.1f and -2.5e-3f are not bfloat16 values: a bfloat16 a_log would show.
const std::vector<float> kALog = {0.1f, -2.5e-3f};

TEST(PrecisionTest, OverflowToBf16FailsWithoutAllowLossy) {
  TempDir tmp;
  std::vector<float> w = {0.1f, 0.2f, 0.3f, 0.4f, 3.4e38f, 0.6f,
                          0.7f, 0.8f, 0.9f, 1.0f, 1.1f,    1.2f};
  WriteSource(tmp / "src", w, kALog);
  const testing::CliRun run =
      RunCli({"convert", "--to", "maxtext", "--quiet", "--plugin", kPlugin.string(),
              (tmp / "src").string(), (tmp / "mt").string()});
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_NE(run.err.find("tensor 'params.params.w.kernel': 1 finite value overflow to Inf when "
                         "rounded to bfloat16 (largest magnitude 3.4e+38, the largest finite "
                         "bfloat16 is 3.39e+38)"),
            std::string::npos)
      << run.err;
  EXPECT_NE(run.err.find("--allow-lossy"), std::string::npos) << run.err;
  // No destination, and no staging directory left beside it.
  EXPECT_EQ(Entries(tmp.path()), std::vector<std::string>({"src"}));
  EXPECT_EQ(run.out, "");
}

TEST(PrecisionTest, AllowLossyWritesInfAndTheAuditReportsIt) {
  TempDir tmp;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> w = {0.1f, 0.2f, 0.3f, 0.4f, 3.4e38f, 0.6f,
                          0.7f, 0.8f, nan,  1.0f, 1.1f,    -1.2f};
  WriteSource(tmp / "src", w, kALog);
  const fs::path audit = tmp / "audit.json";
  const testing::CliRun run = RunCli({"convert", "--to", "maxtext", "--quiet", "--allow-lossy",
                                      "--cast-audit", audit.string(), "--plugin", kPlugin.string(),
                                      (tmp / "src").string(), (tmp / "mt").string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto mt = testing::ReadOrbax(tmp / "mt");
  const testing::Values& kernel = mt.at("params.params.w.kernel");
  ASSERT_EQ(kernel.dtype, DType::kBF16);
  ASSERT_EQ(kernel.shape, (Shape{3, 4}));
  // w [4, 3] transposed: w[1][1] (3.4e38) is kernel[1][1], w[2][2] (NaN) kernel[2][2].
  EXPECT_EQ(kernel.data[1 * 4 + 1], kInf);
  EXPECT_TRUE(std::isnan(kernel.data[2 * 4 + 2]));
  EXPECT_EQ(kernel.data[0], testing::RoundTo(DType::kBF16, 0.1f));

  // The expected measurements, computed here element by element.
  double max_abs = 0, max_rel = 0;
  for (float x : w) {
    if (std::isnan(x) || x == 3.4e38f) continue;
    const double err = std::fabs(double(testing::RoundTo(DType::kBF16, x)) - double(x));
    max_abs = std::max(max_abs, err);
    max_rel = std::max<double>(max_rel, static_cast<float>(err) / std::fabs(x));
  }
  const json report = json::parse(ReadFile(audit).value());
  EXPECT_EQ(report["allow_lossy"], true);
  ASSERT_EQ(report["tensors"].size(), 1u) << report.dump(2);  // a_log is not narrowed
  const json& row = report["tensors"][0];
  EXPECT_EQ(row["name"], "params.params.w.kernel");
  EXPECT_EQ(row["dtype"], "bfloat16");
  EXPECT_EQ(row["elements"], 12);
  EXPECT_EQ(row["overflows"], 1);
  EXPECT_EQ(row["max_overflow_magnitude"].get<double>(), double(3.4e38f));
  EXPECT_EQ(row["nans"], 1);
  EXPECT_EQ(row["underflows"], 0);
  EXPECT_EQ(row["max_abs_error"].get<double>(), max_abs);
  EXPECT_EQ(row["max_rel_error"].get<double>(), max_rel);
  EXPECT_GT(max_rel, 0.0);
  EXPECT_EQ(report["summary"]["worst_tensor"], "params.params.w.kernel");

  EXPECT_NE(run.out.find("cast audit: 1 tensor rounded to a narrower dtype (1 inexact), worst max "
                         "relative error "),
            std::string::npos)
      << run.out;
  EXPECT_NE(run.out.find("in 'params.params.w.kernel'; 1 overflow to Inf, 1 NaN, 0 flushed to "
                         "zero"),
            std::string::npos)
      << run.out;
}

TEST(PrecisionTest, KeptTensorsStayFloat32BothWaysAndInPlan) {
  TempDir tmp;
  std::vector<float> w(12);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.01f * static_cast<float>(i + 1);
  WriteSource(tmp / "src", w, kALog);

  const testing::CliRun plan = RunCli({"plan", "--to", "maxtext", "--save-dtype", "bfloat16",
                                       "--plugin", kPlugin.string(), (tmp / "src").string()});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_NE(LineWith(plan.out, "params.params.a_log").find("float32"), std::string::npos)
      << plan.out;
  EXPECT_NE(LineWith(plan.out, "params.params.w.kernel").find("bfloat16"), std::string::npos)
      << plan.out;

  testing::CliRun run =
      RunCli({"convert", "--to", "maxtext", "--quiet", "--save-dtype", "bfloat16", "--plugin",
              kPlugin.string(), (tmp / "src").string(), (tmp / "mt").string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto mt = testing::ReadOrbax(tmp / "mt");
  EXPECT_EQ(mt.at("params.params.a_log").dtype, DType::kF32);
  EXPECT_EQ(mt.at("params.params.a_log").data, kALog);
  EXPECT_EQ(mt.at("params.params.w.kernel").dtype, DType::kBF16);

  const testing::CliRun plan_hf =
      RunCli({"plan", "--to", "hf", "--plugin", kPlugin.string(), (tmp / "mt").string()});
  ASSERT_EQ(plan_hf.exit_code, 0) << plan_hf.err;
  EXPECT_NE(LineWith(plan_hf.out, "model.a_log").find("float32"), std::string::npos) << plan_hf.out;
  EXPECT_NE(LineWith(plan_hf.out, "model.w.weight").find("bfloat16"), std::string::npos)
      << plan_hf.out;

  run = RunCli({"convert", "--to", "hf", "--quiet", "--plugin", kPlugin.string(),
                (tmp / "mt").string(), (tmp / "hf").string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto hf = testing::ReadHf(tmp / "hf");
  EXPECT_EQ(hf.at("model.a_log").dtype, DType::kF32);
  EXPECT_EQ(hf.at("model.a_log").data, kALog);
  EXPECT_EQ(hf.at("model.w.weight").dtype, DType::kBF16);
  // torch_dtype names what most of the weights are, not the kept tensor.
  const json config = json::parse(ReadFile(tmp / "hf" / "config.json").value());
  EXPECT_EQ(config["torch_dtype"], "bfloat16");
  // Nothing overflowed and no NaN: the summary says so. (bfloat16 moved as
  // bfloat16 is not rounded again: no tensor need be counted.)
  EXPECT_NE(run.out.find("cast audit: "), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("; 0 overflows to Inf, 0 NaN, 0 flushed to zero"), std::string::npos)
      << run.out;
}

TEST(PrecisionTest, OverflowToF16OnExportFailsUnlessAllowed) {
  TempDir tmp;
  std::vector<float> w(12, 0.5f);
  w[5] = 70000.0f;  // fine in float32 and bfloat16, past float16's 65504
  WriteSource(tmp / "src", w, kALog);
  testing::CliRun run =
      RunCli({"convert", "--to", "maxtext", "--quiet", "--save-dtype", "float32", "--plugin",
              kPlugin.string(), (tmp / "src").string(), (tmp / "mt").string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;

  run = RunCli({"convert", "--to", "hf", "--quiet", "--save-dtype", "float16", "--plugin",
                kPlugin.string(), (tmp / "mt").string(), (tmp / "hf").string()});
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_NE(run.err.find("tensor 'model.w.weight': 1 finite value overflow to Inf when rounded "
                         "to float16 (largest magnitude 7e+04, the largest finite float16 is "
                         "6.55e+04)"),
            std::string::npos)
      << run.err;
  EXPECT_EQ(Entries(tmp.path()), std::vector<std::string>({"mt", "src"}));

  run = RunCli({"convert", "--to", "hf", "--quiet", "--save-dtype", "float16", "--allow-lossy",
                "--plugin", kPlugin.string(), (tmp / "mt").string(), (tmp / "hf").string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto hf = testing::ReadHf(tmp / "hf");
  EXPECT_EQ(hf.at("model.w.weight").dtype, DType::kF16);
  EXPECT_EQ(hf.at("model.w.weight").data[5], kInf);
  EXPECT_EQ(hf.at("model.a_log").dtype, DType::kF32);  // kept, whatever --save-dtype says
  EXPECT_NE(run.out.find("1 overflow to Inf"), std::string::npos) << run.out;
}

TEST(PrecisionTest, CastAuditFileInAMissingDirectoryIsAUsageError) {
  TempDir tmp;
  WriteSource(tmp / "src", std::vector<float>(12, 1.0f), kALog);
  const testing::CliRun run =
      RunCli({"convert", "--to", "maxtext", "--quiet", "--cast-audit",
              (tmp / "no" / "audit.json").string(), "--plugin", kPlugin.string(),
              (tmp / "src").string(), (tmp / "mt").string()});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(
      run.err.find("--cast-audit " + (tmp / "no" / "audit.json").string() + ": no such directory"),
      std::string::npos)
      << run.err;
  EXPECT_EQ(Entries(tmp.path()), std::vector<std::string>({"src"}));
}

TEST(PrecisionTest, KeepF32ExportDtype) {
  using engine::KeepF32ExportDType;
  EXPECT_EQ(KeepF32ExportDType(DType::kF32, DType::kBF16), DType::kF32);
  EXPECT_EQ(KeepF32ExportDType(DType::kF32, std::nullopt), DType::kF32);
  EXPECT_EQ(KeepF32ExportDType(DType::kF64, DType::kF16), DType::kF32);
  // Stored narrower (MaxText's own converter writes A_log as bfloat16):
  // widening would add bytes, not information.
  EXPECT_EQ(KeepF32ExportDType(DType::kBF16, DType::kBF16), DType::kBF16);
  EXPECT_EQ(KeepF32ExportDType(DType::kBF16, DType::kF16), DType::kBF16);
  EXPECT_EQ(KeepF32ExportDType(DType::kBF16, std::nullopt), DType::kBF16);
  EXPECT_EQ(KeepF32ExportDType(DType::kBF16, DType::kF32), DType::kF32);
}

}  // namespace
}  // namespace ckptbridge
