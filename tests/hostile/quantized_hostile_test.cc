// Hostile quantization scales: a DeepSeek FP8 weight_scale_inv that is NaN
// or infinite, an MXFP4 (GPT-OSS) E8M0 scale byte 255, which the OCP MX spec
// defines as NaN. Multiplied in, each would turn a whole block into NaNs or
// infinities without a word; the conversion must refuse it with exit code 2,
// naming the file, the tensors, the block and the value, and leave no
// destination (hostile_util.h).
//
// The sources are generated from the plugins' own rules (every HF tensor a
// rule reads, with the shape it declares), so they follow the plugins as
// their mappings change; the undamaged ones must convert.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "host/formats/safetensors/reader.h"
#include "host/formats/safetensors/writer.h"
#include "host/plugin/adapter.h"
#include "host/plugin/loader.h"
#include "tests/hostile/hostile_util.h"
#include "tests/testing/quantized.h"
#include "tests/testing/testing.h"

namespace ckptbridge::hostile {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path PluginFile(const std::string& family) {
  return fs::path(CKPTBRIDGE_BINARY_DIR) / "lib" / "ckptbridge" / "plugins" /
         ("libckptbridge_" + family + ".so");
}

// name -> spec and bytes, in name order.
using Tensors = std::map<std::string, safetensors::TensorWithData>;

// Names of the tensors a rule reads one leading-axis slice at a time.
std::set<std::string>& LeadingAxisTensors() {
  static std::set<std::string> names;
  return names;
}

// Every HF tensor the plugin's to-MaxText rules read from a checkpoint with
// `config` (optional rules left out), filled with valid values: FP8 codes
// (never NaN) with f32 block scales near 1e-3, MXFP4 blocks with E8M0
// exponents near 2^-7, bfloat16 elsewhere.
Tensors Generate(const std::string& family, const json& config) {
  Tensors out;
  Result<LoadedPlugin> plugin = LoadPlugin(PluginFile(family));
  EXPECT_TRUE(plugin.ok()) << plugin.status().message();
  if (!plugin.ok()) return out;
  Result<std::unique_ptr<Adapter>> adapter =
      Adapter::Create(*plugin, config["model_type"].get<std::string>(), config.dump());
  EXPECT_TRUE(adapter.ok()) << adapter.status().message();
  if (!adapter.ok()) return out;
  Result<RuleSet> rules =
      (*adapter)->Rules(json{{"direction", "to_maxtext"}, {"scan_layers", true}}.dump());
  EXPECT_TRUE(rules.ok()) << rules.status().message();
  if (!rules.ok()) return out;

  std::mt19937 rng(7);
  for (const Rule& rule : rules->rules) {
    if (rule.optional()) continue;
    // Every combination of the named stack axes ({layer}, {expert}); a
    // leading-axis stack is inside the tensors, whose dims include it.
    std::vector<std::vector<std::pair<std::string, int64_t>>> slices = {{}};
    for (const StackAxis& s : rule.stack) {
      if (s.hf_leading) continue;
      const std::string placeholder = s.meaning == CKB_AXIS_EXPERTS ? "{expert}" : "{layer}";
      std::vector<std::vector<std::pair<std::string, int64_t>>> next;
      for (const auto& slice : slices) {
        for (int64_t i = 0; i < s.count; ++i) {
          next.push_back(slice);
          next.back().emplace_back(placeholder, s.hf_start + s.hf_stride * i);
        }
      }
      slices = std::move(next);
    }
    std::vector<std::string> templates;
    for (const TensorDecl& in : rule.hf_inputs) templates.push_back(in.name);
    for (const auto& slice : slices) {
      for (const TensorDecl& in : rule.hf_inputs) {
        std::string name = in.name;
        for (const auto& [placeholder, value] : slice) {
          for (size_t at = name.find(placeholder); at != std::string::npos;
               at = name.find(placeholder)) {
            name.replace(at, placeholder.size(), std::to_string(value));
          }
        }
        const int64_t n = NumElementsUnchecked(in.dims);
        const auto has = [&](const std::string& suffix) {
          return std::find(templates.begin(), templates.end(), in.name + suffix) != templates.end();
        };
        const auto ends = [&](const std::string& suffix) {
          return name.size() > suffix.size() &&
                 name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
        };
        safetensors::TensorWithData t;
        t.spec.name = name;
        t.spec.shape = in.dims;
        if (ends("_scale_inv")) {  // FP8 block scales, f32 near 1e-3
          t.spec.dtype = DType::kF32;
          std::vector<float> v(static_cast<size_t>(n));
          for (float& x : v) x = std::ldexp(1.0f + static_cast<float>(rng() % 100) / 100.0f, -10);
          t.bytes.assign(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
        } else if (has("_scale_inv")) {  // FP8 codes, every finite one
          t.spec.dtype = DType::kF8E4M3;
          t.bytes.resize(static_cast<size_t>(n));
          for (char& c : t.bytes) c = static_cast<char>((rng() % 0x7f) | (rng() & 0x80));
        } else if (ends("_blocks")) {  // two E2M1 codes a byte
          t.spec.dtype = DType::kU8;
          t.bytes.resize(static_cast<size_t>(n));
          for (char& c : t.bytes) c = static_cast<char>(rng());
        } else if (ends("_scales")) {  // E8M0 exponents near 2^-7
          t.spec.dtype = DType::kU8;
          t.bytes.resize(static_cast<size_t>(n));
          for (char& c : t.bytes) c = static_cast<char>(115 + rng() % 10);
        } else {  // bfloat16, small
          t.spec.dtype = DType::kBF16;
          t.bytes.resize(static_cast<size_t>(2 * n));
          for (size_t i = 0; i < t.bytes.size(); i += 2) {
            const uint16_t bits = static_cast<uint16_t>(0x3c00 + rng() % 0x200) |
                                  static_cast<uint16_t>((rng() & 1) << 15);
            std::memcpy(t.bytes.data() + i, &bits, 2);
          }
        }
        if (std::any_of(rule.stack.begin(), rule.stack.end(),
                        [](const StackAxis& s) { return s.hf_leading; })) {
          LeadingAxisTensors().insert(name);
        }
        out[name] = std::move(t);
      }
    }
  }
  return out;
}

class HostileScalesTest : public ::testing::Test {
 protected:
  // Writes `tensors` as a sharded checkpoint with `config`.
  void Write(const json& config, const Tensors& tensors) {
    fs::create_directories(src_);
    ASSERT_TRUE(WriteFile(src_ / "config.json", config.dump(2)).ok());
    std::vector<safetensors::TensorWithData> list;
    for (const auto& [name, t] : tensors) list.push_back(t);
    Status written = safetensors::WriteCheckpoint(src_, list, /*max_shard_bytes=*/64 << 10);
    ASSERT_TRUE(written.ok()) << written.message();
  }
  // How the host names the inputs of a custom transform: "<file>: tensors
  // 'a' and 'b'", or each with its file when they lie in different shards.
  std::string Inputs(const std::string& a, const std::string& b) const {
    Result<std::unique_ptr<safetensors::Checkpoint>> c = safetensors::Checkpoint::Open(src_);
    EXPECT_TRUE(c.ok());
    if (!c.ok() || !(*c)->Find(a) || !(*c)->Find(b)) return "(tensors not written)";
    const std::string fa = (*c)->Find(a)->file->path().string();
    const std::string fb = (*c)->Find(b)->file->path().string();
    if (fa == fb) return fa + ": tensors '" + a + "' and '" + b + "'";
    return "tensors '" + a + "' (" + fa + ") and '" + b + "' (" + fb + ")";
  }
  std::vector<std::string> Convert() const {
    return {"convert", "--to", "maxtext", "--quiet", src_.string(), dst_.string()};
  }

  testing::TempDir tmp_;
  const fs::path src_ = tmp_ / "src";
  const fs::path dst_ = tmp_ / "dst";
};

// A tiny DeepSeek V3 FP8 release in 16x8 blocks: its 48-wide projections
// have several blocks a row and a column. 3 layers (1 dense), 4 experts, no
// MTP layer, no rope scaling.
json Fp8Config() {
  json c = testing::deepseek::TinyV3();
  c["num_hidden_layers"] = 3;
  c["first_k_dense_replace"] = 1;
  c["n_routed_experts"] = 4;
  c["num_nextn_predict_layers"] = 0;
  c["max_position_embeddings"] = 4096;
  c.erase("rope_scaling");
  c.erase("torch_dtype");
  c["quantization_config"] = testing::deepseek::Fp8QuantizationConfig(16, 8);
  return c;
}

// A tiny GPT-OSS MXFP4 release: hidden 64 and intermediate 96 are 2 and 3
// MXFP4 blocks; 3 experts, 2 layers.
json Mxfp4Config() { return testing::gptoss::Mxfp4Config(/*layers=*/2); }

constexpr char kFp8Weight[] = "model.layers.1.mlp.experts.2.down_proj.weight";

void SetF32(Tensors& tensors, const std::string& name, size_t index, uint32_t bits) {
  std::string& bytes = tensors.at(name).bytes;
  ASSERT_LT(4 * index + 4, bytes.size() + 1) << name;
  std::memcpy(bytes.data() + 4 * index, &bits, 4);
}

TEST_F(HostileScalesTest, TheUndamagedFp8SourceConverts) {
  const Tensors tensors = Generate("deepseek", Fp8Config());
  ASSERT_TRUE(tensors.count(kFp8Weight)) << "the rules no longer read " << kFp8Weight;
  ASSERT_EQ(tensors.at(std::string(kFp8Weight) + "_scale_inv").spec.shape, (Shape{3, 2}));
  Write(Fp8Config(), tensors);
  const testing::CliRun run = testing::RunCli(Convert());
  EXPECT_EQ(run.exit_code, 0) << run.err;
}

TEST_F(HostileScalesTest, Fp8ScaleNanOrInfiniteIsRefusedNamingTheBlock) {
  const std::string scale = std::string(kFp8Weight) + "_scale_inv";
  // weight_scale_inv is [48/16, 16/8] = [3, 2]; element 5 is block [2, 1].
  for (const auto& [bits, shown] :
       std::vector<std::pair<uint32_t, std::string>>{{0x7fc00000u, "NaN (float32 0x7fc00000)"},
                                                     {0xffc00001u, "NaN (float32 0xffc00001)"},
                                                     {0x7f800000u, "+inf (float32 0x7f800000)"},
                                                     {0xff800000u, "-inf (float32 0xff800000)"}}) {
    SCOPED_TRACE(shown);
    fs::remove_all(src_);
    Tensors tensors = Generate("deepseek", Fp8Config());
    ASSERT_TRUE(tensors.count(scale));
    SetF32(tensors, scale, 5, bits);
    Write(Fp8Config(), tensors);
    EXPECT_TRUE(Refuses(Convert(), tmp_.path(), dst_,
                        Inputs(kFp8Weight, scale) +
                            ": plugin 'deepseek': fp8 dequantization: weight_scale_inv block "
                            "[2, 1] is " +
                            shown + "; a block scale must be finite"));
  }
}

TEST_F(HostileScalesTest, Fp8ZeroAndNegativeScalesAreAppliedAsDefined) {
  // Finite scales are the definition's business: zero (an all-zero block)
  // and negative ones convert.
  Tensors tensors = Generate("deepseek", Fp8Config());
  const std::string scale = std::string(kFp8Weight) + "_scale_inv";
  ASSERT_TRUE(tensors.count(scale));
  SetF32(tensors, scale, 0, 0x00000000u);
  SetF32(tensors, scale, 1, 0x80000000u);  // -0
  SetF32(tensors, scale, 2, 0xbf800000u);  // -1
  Write(Fp8Config(), tensors);
  const testing::CliRun run = testing::RunCli(Convert());
  EXPECT_EQ(run.exit_code, 0) << run.err;
}

constexpr char kMxfp4[] = "model.layers.1.mlp.experts.down_proj";

TEST_F(HostileScalesTest, TheUndamagedMxfp4SourceConverts) {
  const Tensors tensors = Generate("gptoss", Mxfp4Config());
  ASSERT_TRUE(tensors.count(std::string(kMxfp4) + "_scales"))
      << "the rules no longer read " << kMxfp4 << "_scales";
  Write(Mxfp4Config(), tensors);
  const testing::CliRun run = testing::RunCli(Convert());
  EXPECT_EQ(run.exit_code, 0) << run.err;
}

TEST_F(HostileScalesTest, Mxfp4ScaleByte255IsRefusedNamingTheBlock) {
  const std::string blocks = std::string(kMxfp4) + "_blocks";
  const std::string scales = std::string(kMxfp4) + "_scales";
  Tensors tensors = Generate("gptoss", Mxfp4Config());
  ASSERT_TRUE(tensors.count(scales));
  // down_proj scales are [experts 3, out 64, in 96/32 = 3]: expert 2, row 5,
  // block 1.
  ASSERT_EQ(tensors.at(scales).spec.shape, (Shape{3, 64, 3}));
  tensors.at(scales).bytes[(2 * 64 + 5) * 3 + 1] = static_cast<char>(0xff);
  Write(Mxfp4Config(), tensors);
  // The plugin counts the block within what it was given: the whole tensor,
  // or one expert of it when the rule converts one expert at a time.
  const bool per_expert = LeadingAxisTensors().count(scales) > 0;
  EXPECT_TRUE(Refuses(
      Convert(), tmp_.path(), dst_,
      Inputs(blocks, scales) + (per_expert ? ", expert 2 (index 2 of their first axis)" : "") +
          ": plugin 'gptoss': mxfp4 dequantization: the scale of block " +
          (per_expert ? "[5, 1]" : "[2, 5, 1]") + " is 255 (0xff), which E8M0 defines as NaN"));
}

}  // namespace
}  // namespace ckptbridge::hostile
