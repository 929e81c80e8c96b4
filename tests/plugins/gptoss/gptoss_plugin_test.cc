// The gptoss plugin (GPT-OSS 20B/120B), end to end and through the host's
// adapter.
//
// What is checked, and against what:
//  - MXFP4 test vectors: the plugin's dequantization against values written
//    down by hand (every E2M1 code, low nibble first; scale extremes and the
//    overflow to Inf as MaxText's dequantize_mxfp4.py and transformers'
//    convert_moe_packed_tensors compute them; the E8M0 NaN, scale 255,
//    refused naming its block; block edges; rows and experts that are not
//    multiples of anything) and against a bit-level E2M1/E8M0 decoder
//    written here from the OCP MX definition (not the plugin's table).
//  - Generated GPT-OSS-shaped checkpoints with unequal dimensions and the
//    2-layer cycle: every MaxText tensor against values computed here with
//    index loops from MaxText's mapping (maxtext-mapping.md §6.8,
//    param_mapping.py GPT_OSS_*), scanned and unscanned, bfloat16 and
//    float32, compared bit for bit; bfloat16 sources come back byte for byte;
//    MXFP4 sources export the bfloat16 layout, equal to the independent
//    dequantization.
//  - The real openai/gpt-oss-20b index + config
//    (tests/data/fixtures/hf-index/gpt-oss-20b): at full size (sparse shards
//    that carry the real headers and no data), the plan accounts for every
//    one of its tensors, and its config translates to MaxText's
//    configs/models/gpt-oss-20b.yml.
//  - Refusals, with their reasons.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "host/base/file.h"
#include "host/base/numeric.h"
#include "host/engine/execute.h"
#include "host/engine/plan.h"
#include "host/formats/safetensors/reader.h"
#include "host/formats/safetensors/writer.h"
#include "host/plugin/adapter.h"
#include "host/plugin/loader.h"
#include "tests/testing/quantized.h"
#include "tests/testing/testing.h"

namespace ckptbridge {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::CliRun;
using ::testing::HasSubstr;
using testing::RunCli;
using testing::TempDir;
using testing::Values;
// The small GPT-OSS configs (bfloat16 and MXFP4 releases) and their
// layer_types: tests/testing/quantized.h.
using testing::gptoss::Bf16Config;
using testing::gptoss::LayerTypes;
using testing::gptoss::Mxfp4Config;

constexpr float kInf = std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------------------
// The plugin, called through the host's adapter.

const LoadedPlugin& Plugin() {
  static const LoadedPlugin plugin = [] {
    Result<LoadedPlugin> p = LoadPlugin(CKB_GPTOSS_PLUGIN_FILE);
    EXPECT_TRUE(p.ok()) << p.status().message();
    return p.ok() ? *p : LoadedPlugin{};
  }();
  return plugin;
}

Result<std::unique_ptr<Adapter>> MakeAdapter(const json& config) {
  return Adapter::Create(Plugin(), "gpt_oss", config.dump());
}

json ReadJson(const fs::path& file) {
  Result<std::string> text = ReadFile(file);
  EXPECT_TRUE(text.ok()) << file;
  return text.ok() ? json::parse(*text) : json();
}

// ---------------------------------------------------------------------------
// An MXFP4 decoder of our own, from the bits (OCP Microscaling Formats v1.0):
// E2M1 is S EE M; EE = 0 is subnormal (M * 0.5), else (1 + M/2) * 2^(EE-1);
// the sign applies to zero too. E8M0 is 2^(e-127) as a float32, as float32
// `2.0 ** (e - 127)` is in MaxText's dequantize_mxfp4.py: e = 0 is the
// subnormal 2^-127; e = 255 is NaN (the plugin refuses it).

float DecodeE2m1(uint8_t code) {
  const int exponent = (code >> 1) & 3, mantissa = code & 1;
  const float magnitude = exponent == 0 ? 0.5f * static_cast<float>(mantissa)
                                        : (1.0f + 0.5f * static_cast<float>(mantissa)) *
                                              static_cast<float>(1 << (exponent - 1));
  return (code & 8) ? -magnitude : magnitude;
}

float DecodeE8m0(uint8_t e) {
  if (e == 255) return std::numeric_limits<float>::quiet_NaN();
  double v = 1.0;
  for (int i = 127; i < e; ++i) v *= 2.0;
  for (int i = e; i < 127; ++i) v /= 2.0;
  return static_cast<float>(v);
}

// Blocks [rows, groups, 16] + scales [rows, groups] -> [rows, groups * 32].
std::vector<float> DequantizeReference(const std::string& blocks, const std::string& scales,
                                       int64_t rows, int64_t groups) {
  std::vector<float> out(static_cast<size_t>(rows * groups * 32));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t k = 0; k < 32; ++k) {
        const auto byte = static_cast<uint8_t>(blocks[(r * groups + g) * 16 + k / 2]);
        const uint8_t code = k % 2 == 0 ? byte & 0x0f : byte >> 4;
        out[(r * groups + g) * 32 + k] =
            DecodeE2m1(code) * DecodeE8m0(static_cast<uint8_t>(scales[r * groups + g]));
      }
  return out;
}

// Equal bits, or both NaN (a NaN's sign and payload are not part of either
// reference's definition).
bool SameValue(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || FloatBits(a) == FloatBits(b);
}

// ---------------------------------------------------------------------------
// MXFP4 test vectors through the plugin's custom transform.

struct Dequantized {
  Status status;
  std::vector<float> values;
};

Dequantized Dequantize(std::vector<uint8_t> blocks, Shape block_shape, std::vector<uint8_t> scales,
                       Shape scale_shape, Shape out_shape, DType block_dtype = DType::kU8,
                       DType scale_dtype = DType::kU8, int32_t id = 1) {
  Result<std::unique_ptr<Adapter>> adapter = MakeAdapter(json{{"model_type", "gpt_oss"},
                                                              {"vocab_size", 8},
                                                              {"hidden_size", 32},
                                                              {"intermediate_size", 32},
                                                              {"num_hidden_layers", 2},
                                                              {"num_attention_heads", 2},
                                                              {"num_local_experts", 2},
                                                              {"num_experts_per_tok", 1}});
  EXPECT_TRUE(adapter.ok()) << adapter.status().message();
  Dequantized result;
  result.values.assign(static_cast<size_t>(NumElementsUnchecked(out_shape)), -1.0f);
  result.status = (*adapter)->ApplyCustom(
      id, {{block_dtype, block_shape, blocks.data()}, {scale_dtype, scale_shape, scales.data()}},
      {{DType::kF32, out_shape, result.values.data()}});
  return result;
}

TEST(Mxfp4VectorsTest, EveryE2m1CodeLowNibbleFirst) {
  // Byte j holds code j in its low nibble and code 15 - j in its high one.
  std::vector<uint8_t> blocks(16);
  for (int j = 0; j < 16; ++j) blocks[j] = static_cast<uint8_t>(((15 - j) << 4) | j);
  Dequantized d = Dequantize(blocks, {1, 16}, {127}, {1}, {32});
  ASSERT_TRUE(d.status.ok()) << d.status.message();
  const float want[32] = {0.0f,  -6.0f, 0.5f,  -4.0f, 1.0f,  -3.0f, 1.5f,  -2.0f,
                          2.0f,  -1.5f, 3.0f,  -1.0f, 4.0f,  -0.5f, 6.0f,  -0.0f,
                          -0.0f, 6.0f,  -0.5f, 4.0f,  -1.0f, 3.0f,  -1.5f, 2.0f,
                          -2.0f, 1.5f,  -3.0f, 1.0f,  -4.0f, 0.5f,  -6.0f, 0.0f};
  for (int k = 0; k < 32; ++k) {
    EXPECT_EQ(FloatBits(d.values[k]), FloatBits(want[k]))
        << "element " << k << ": got " << d.values[k] << ", want " << want[k];
    EXPECT_EQ(FloatBits(want[k]),
              FloatBits(DecodeE2m1(k % 2 ? blocks[k / 2] >> 4 : blocks[k / 2] & 15)))
        << "the test's own decoder disagrees at " << k;
  }
}

TEST(Mxfp4VectorsTest, ScaleExtremesSubnormalsAndOverflowToInf) {
  // Five rows of one block, scales 0, 1, 126, 128, 254. Each block starts
  // with 0x71 (0.5, then 6), 0x98 (-0, then -0.5) and zeros.
  const std::vector<uint8_t> scales = {0, 1, 126, 128, 254};
  std::vector<uint8_t> blocks(5 * 16, 0);
  for (int r = 0; r < 5; ++r) {
    blocks[r * 16] = 0x71;
    blocks[r * 16 + 1] = 0x98;
  }
  Dequantized d = Dequantize(blocks, {5, 1, 16}, scales, {5, 1}, {5, 32});
  ASSERT_TRUE(d.status.ok()) << d.status.message();
  const float want[5][5] = {
      {0x1p-128f, 0x1.8p-125f, -0.0f, -0x1p-128f, 0.0f},  // 2^-127: f32 subnormals, exact
      {0x1p-127f, 0x1.8p-124f, -0.0f, -0x1p-127f, 0.0f},
      {0.25f, 3.0f, -0.0f, -0.25f, 0.0f},
      {1.0f, 12.0f, -0.0f, -1.0f, 0.0f},
      {0x1p126f, kInf, -0.0f, -0x1p126f, 0.0f},  // 6 * 2^127 overflows f32
  };
  for (int r = 0; r < 5; ++r) {
    for (int k = 0; k < 5; ++k) {
      EXPECT_TRUE(SameValue(d.values[r * 32 + k], want[r][k]))
          << "scale " << int{scales[r]} << " element " << k << ": got " << d.values[r * 32 + k]
          << ", want " << want[r][k];
    }
    // The rest of the block is code 0: +0.
    for (int k = 5; k < 32; ++k)
      EXPECT_TRUE(SameValue(d.values[r * 32 + k], 0.0f)) << r << " " << k;
  }
  // The same through bfloat16 (MaxText's default save dtype): all of these
  // are bfloat16 values, so nothing rounds.
  for (int r = 0; r < 5; ++r)
    for (int k = 0; k < 5; ++k)
      EXPECT_TRUE(SameValue(testing::RoundTo(DType::kBF16, want[r][k]), want[r][k]));
}

// Scale 255 is E8M0's NaN (OCP MX v1.0): the reference scripts would make
// the block +-inf and NaN; the plugin refuses it, naming the block by its
// place in the scales tensor, whatever the scales' dtype label.
TEST(Mxfp4VectorsTest, ScaleByte255IsRefusedNamingTheBlock) {
  // Experts 2, rows 3, two blocks a row; the NaN at expert 1, row 2, block 0.
  std::vector<uint8_t> blocks(2 * 3 * 2 * 16, 0x22), scales(2 * 3 * 2, 127);
  scales[(1 * 3 + 2) * 2 + 0] = 255;
  for (const DType dtype : {DType::kU8, DType::kF8E8M0}) {
    Dequantized d =
        Dequantize(blocks, {2, 3, 2, 16}, scales, {2, 3, 2}, {2, 3, 64}, DType::kU8, dtype);
    EXPECT_EQ(d.status.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(d.status.message(),
              "plugin 'gptoss': mxfp4 dequantization: the scale of block [1, 2, 0] is 255 "
              "(0xff), which E8M0 defines as NaN (OCP MX v1.0); none of its 32 values can be "
              "dequantized");
  }
  // A one-dimensional grid, last block.
  std::vector<uint8_t> flat(3, 120);
  flat[2] = 255;
  Dequantized d = Dequantize(std::vector<uint8_t>(3 * 16, 0), {3, 16}, flat, {3}, {96});
  EXPECT_NE(d.status.message().find("the scale of block [2] is 255"), std::string::npos)
      << d.status.message();
  // 254, the largest finite scale, is not refused.
  flat[2] = 254;
  EXPECT_TRUE(Dequantize(std::vector<uint8_t>(3 * 16, 0), {3, 16}, flat, {3}, {96}).status.ok());
}

TEST(Mxfp4VectorsTest, BlockEdgesAndUnevenShapesMatchTheBitLevelDecoder) {
  // Experts 2, rows 3, two blocks a row: neither 2 nor 3 is a multiple of
  // anything, and each row crosses a block edge at element 32.
  const int64_t x = 2, rows = 3, groups = 2;
  std::mt19937 rng(5);
  std::vector<uint8_t> blocks(x * rows * groups * 16), scales(x * rows * groups);
  for (uint8_t& b : blocks) b = static_cast<uint8_t>(rng());
  for (size_t i = 0; i < scales.size(); ++i) scales[i] = static_cast<uint8_t>(115 + 2 * i);
  // Around the edge of expert 1, row 2: byte 15 of block 0 and byte 0 of
  // block 1, under scales 2^-7 and 2^3.
  const int64_t row = 1 * rows + 2;
  blocks[(row * groups + 0) * 16 + 15] = 0x30;  // element 30: +0, element 31: 1.5
  blocks[(row * groups + 1) * 16 + 0] = 0xad;   // element 32: -3, element 33: -1
  scales[row * groups + 0] = 120;
  scales[row * groups + 1] = 130;
  Dequantized d =
      Dequantize(blocks, {x, rows, groups, 16}, scales, {x, rows, groups}, {x, rows, groups * 32});
  ASSERT_TRUE(d.status.ok()) << d.status.message();
  EXPECT_EQ(FloatBits(d.values[row * 64 + 30]), FloatBits(0.0f));
  EXPECT_EQ(d.values[row * 64 + 31], 0x1.8p-7f);
  EXPECT_EQ(d.values[row * 64 + 32], -24.0f);
  EXPECT_EQ(d.values[row * 64 + 33], -8.0f);

  const std::vector<float> want =
      DequantizeReference(std::string(blocks.begin(), blocks.end()),
                          std::string(scales.begin(), scales.end()), x * rows, groups);
  ASSERT_EQ(d.values.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_TRUE(SameValue(d.values[i], want[i])) << i << ": " << d.values[i] << " vs " << want[i];
  }

  // Scales stored with safetensors' own E8M0 dtype read the same.
  Dequantized e8m0 = Dequantize(blocks, {x, rows, groups, 16}, scales, {x, rows, groups},
                                {x, rows, groups * 32}, DType::kU8, DType::kF8E8M0);
  ASSERT_TRUE(e8m0.status.ok()) << e8m0.status.message();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_TRUE(SameValue(e8m0.values[i], want[i])) << i;
}

TEST(Mxfp4VectorsTest, MalformedInputsAreRefusedNamingBothSides) {
  const std::vector<uint8_t> blocks(2 * 16, 0x11), scales(2, 127);
  Dequantized bf16 = Dequantize(blocks, {2, 16}, scales, {2}, {64}, DType::kBF16);
  EXPECT_THAT(bf16.status.message(),
              HasSubstr("mxfp4 dequantization: blocks are BF16, expected U8"));
  Dequantized scale_shape = Dequantize(blocks, {2, 16}, scales, {1, 2}, {64});
  EXPECT_THAT(scale_shape.status.message(),
              HasSubstr("scales have shape [1, 2] but blocks [2, 16] need [2]"));
  Dequantized out_shape = Dequantize(blocks, {2, 16}, scales, {2}, {2, 32});
  EXPECT_THAT(out_shape.status.message(),
              HasSubstr("output is F32 [2, 32] but blocks [2, 16] dequantize to F32 [64]"));
  Dequantized not_blocks = Dequantize(blocks, {4, 8}, scales, {4}, {64});
  EXPECT_THAT(not_blocks.status.message(), HasSubstr("expected [..., groups, 16]"));
  Dequantized unknown = Dequantize(blocks, {2, 16}, scales, {2}, {64}, DType::kU8, DType::kU8, 9);
  EXPECT_EQ(unknown.status.code(), StatusCode::kNotFound);
  EXPECT_THAT(unknown.status.message(), HasSubstr("unknown custom transform 9"));
}

// ---------------------------------------------------------------------------
// Generated checkpoints, of Bf16Config and Mxfp4Config
// (tests/testing/quantized.h).

struct ModelDims {
  int64_t v, e, f, layers, nq, nkv, d, x;
  bool tied, bias;
};

ModelDims DimsOf(const json& c) {
  ModelDims m{};
  m.v = c["vocab_size"];
  m.e = c["hidden_size"];
  m.f = c["intermediate_size"];
  m.layers = c["num_hidden_layers"];
  m.nq = c["num_attention_heads"];
  m.nkv = c["num_key_value_heads"];
  m.d = c["head_dim"];
  m.x = c["num_local_experts"];
  m.tied = c.value("tie_word_embeddings", false);
  m.bias = c.value("attention_bias", true);
  return m;
}

// The tensors of the bfloat16 release (unsloth/gpt-oss-*-BF16 names).
std::vector<testing::HfTensorSpec> Bf16Tensors(const json& c) {
  const ModelDims m = DimsOf(c);
  std::vector<testing::HfTensorSpec> t = {{"model.embed_tokens.weight", {m.v, m.e}},
                                          {"model.norm.weight", {m.e}}};
  if (!m.tied) t.push_back({"lm_head.weight", {m.v, m.e}});
  for (int64_t l = 0; l < m.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", {m.e}});
    t.push_back({p + "post_attention_layernorm.weight", {m.e}});
    t.push_back({p + "self_attn.q_proj.weight", {m.nq * m.d, m.e}});
    t.push_back({p + "self_attn.k_proj.weight", {m.nkv * m.d, m.e}});
    t.push_back({p + "self_attn.v_proj.weight", {m.nkv * m.d, m.e}});
    t.push_back({p + "self_attn.o_proj.weight", {m.e, m.nq * m.d}});
    if (m.bias) {
      t.push_back({p + "self_attn.q_proj.bias", {m.nq * m.d}});
      t.push_back({p + "self_attn.k_proj.bias", {m.nkv * m.d}});
      t.push_back({p + "self_attn.v_proj.bias", {m.nkv * m.d}});
      t.push_back({p + "self_attn.o_proj.bias", {m.e}});
    }
    t.push_back({p + "self_attn.sinks", {m.nq}});
    t.push_back({p + "mlp.router.weight", {m.x, m.e}});
    t.push_back({p + "mlp.router.bias", {m.x}});
    t.push_back({p + "mlp.experts.gate_up_proj", {m.x, m.e, 2 * m.f}});
    t.push_back({p + "mlp.experts.gate_up_proj_bias", {m.x, 2 * m.f}});
    t.push_back({p + "mlp.experts.down_proj", {m.x, m.f, m.e}});
    t.push_back({p + "mlp.experts.down_proj_bias", {m.x, m.e}});
  }
  return t;
}

using HfValues = std::map<std::string, std::vector<float>>;

HfValues ValuesOf(const std::map<std::string, Values>& tensors) {
  HfValues out;
  for (const auto& [name, v] : tensors) out[name] = v.data;
  return out;
}

// The MaxText tensors MaxText's converter makes of the bfloat16-release
// tensors `hf`, computed with index loops from param_mapping.py GPT_OSS_*.
std::map<std::string, Values> ExpectedMaxText(const HfValues& hf, const json& c, bool scan,
                                              DType dtype) {
  const ModelDims m = DimsOf(c);
  std::map<std::string, Values> out;
  auto tensor = [&](const std::string& name, Shape shape) -> Values& {
    Values& t = out["params.params." + name];
    if (t.data.empty()) {
      t.dtype = dtype;
      t.shape = std::move(shape);
      t.data.assign(static_cast<size_t>(NumElementsUnchecked(t.shape)), 0.0f);
    }
    return t;
  };
  auto at = [&](const std::string& name) -> const std::vector<float>& { return hf.at(name); };
  auto put = [&](Values& t, const std::vector<int64_t>& index, float value) {
    int64_t offset = 0;
    for (size_t i = 0; i < index.size(); ++i) offset = offset * t.shape[i] + index[i];
    t.data[offset] = testing::RoundTo(dtype, value);
  };

  Values& emb = tensor("token_embedder.embedding", {m.v, m.e});
  for (int64_t i = 0; i < m.v * m.e; ++i)
    put(emb, {i / m.e, i % m.e}, at("model.embed_tokens.weight")[i]);
  Values& norm = tensor("decoder.decoder_norm.scale", {m.e});
  for (int64_t i = 0; i < m.e; ++i) put(norm, {i}, at("model.norm.weight")[i]);
  if (!m.tied) {
    Values& logits = tensor("decoder.logits_dense.kernel", {m.e, m.v});
    for (int64_t i = 0; i < m.e; ++i)
      for (int64_t j = 0; j < m.v; ++j) put(logits, {i, j}, at("lm_head.weight")[j * m.e + i]);
  }

  for (int64_t l = 0; l < m.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    // Scanned: block l % 2 holds HF layers l % 2, l % 2 + 2, ... at index
    // l / 2 of axis 1. Unscanned: decoder.layers_l.
    struct Slot {
      Values* t;
      int64_t layer;
    };
    auto slot = [&](const std::string& sub, Shape per_layer) -> Slot {
      if (!scan) return {&tensor("decoder.layers_" + std::to_string(l) + "." + sub, per_layer), -1};
      per_layer.insert(per_layer.begin() + 1, m.layers / 2);
      return {&tensor("decoder.layers.layers_" + std::to_string(l % 2) + "." + sub, per_layer),
              l / 2};
    };
    auto set = [&](const Slot& s, std::vector<int64_t> index, float value) {
      if (s.layer >= 0) index.insert(index.begin() + 1, s.layer);
      put(*s.t, index, value);
    };

    const Slot pre = slot("pre_self_attention_layer_norm.scale", {m.e});
    const Slot post = slot("post_self_attention_layer_norm.scale", {m.e});
    for (int64_t i = 0; i < m.e; ++i) {
      set(pre, {i}, at(p + "input_layernorm.weight")[i]);
      set(post, {i}, at(p + "post_attention_layernorm.weight")[i]);
    }
    // Attention: kernel[in, head, d] = proj[head * D + d][in]; no scaling.
    const Slot q = slot("GptOssAttention.query.kernel", {m.e, m.nq, m.d});
    for (int64_t i = 0; i < m.e; ++i)
      for (int64_t n = 0; n < m.nq; ++n)
        for (int64_t k = 0; k < m.d; ++k)
          set(q, {i, n, k}, at(p + "self_attn.q_proj.weight")[(n * m.d + k) * m.e + i]);
    for (const std::string name : {"key", "value"}) {
      const std::string proj = p + "self_attn." + name[0] + "_proj.weight";
      const Slot s = slot("GptOssAttention." + name + ".kernel", {m.e, m.nkv, m.d});
      for (int64_t i = 0; i < m.e; ++i)
        for (int64_t n = 0; n < m.nkv; ++n)
          for (int64_t k = 0; k < m.d; ++k) set(s, {i, n, k}, at(proj)[(n * m.d + k) * m.e + i]);
    }
    const Slot o = slot("GptOssAttention.out.kernel", {m.nq, m.d, m.e});
    for (int64_t n = 0; n < m.nq; ++n)
      for (int64_t k = 0; k < m.d; ++k)
        for (int64_t i = 0; i < m.e; ++i)
          set(o, {n, k, i}, at(p + "self_attn.o_proj.weight")[i * (m.nq * m.d) + n * m.d + k]);
    if (m.bias) {
      for (auto [name, heads] :
           {std::pair<std::string, int64_t>{"query", m.nq}, {"key", m.nkv}, {"value", m.nkv}}) {
        const std::string proj = p + "self_attn." + name[0] + "_proj.bias";
        const Slot s = slot("GptOssAttention." + name + ".bias", {heads, m.d});
        for (int64_t n = 0; n < heads; ++n)
          for (int64_t k = 0; k < m.d; ++k) set(s, {n, k}, at(proj)[n * m.d + k]);
      }
      const Slot ob = slot("GptOssAttention.out.bias", {m.e});
      for (int64_t i = 0; i < m.e; ++i) set(ob, {i}, at(p + "self_attn.o_proj.bias")[i]);
    }
    const Slot sinks = slot("GptOssAttention.sinks", {m.nq});
    for (int64_t n = 0; n < m.nq; ++n) set(sinks, {n}, at(p + "self_attn.sinks")[n]);

    // Router: gate.kernel[in, expert] = router.weight[expert][in].
    const Slot gate = slot("GptOssMlp.gate.kernel", {m.e, m.x});
    const Slot gate_bias = slot("GptOssMlp.gate.bias", {m.x});
    for (int64_t j = 0; j < m.x; ++j) {
      set(gate_bias, {j}, at(p + "mlp.router.bias")[j]);
      for (int64_t i = 0; i < m.e; ++i) set(gate, {i, j}, at(p + "mlp.router.weight")[j * m.e + i]);
    }
    // Experts: gate = even columns of gate_up, up = odd ones (wi_0 = gu[..., 0::2]).
    const Slot wi0 = slot("GptOssMlp.wi_0", {m.x, m.e, m.f});
    const Slot wi1 = slot("GptOssMlp.wi_1", {m.x, m.e, m.f});
    const Slot wi0b = slot("GptOssMlp.wi_0_bias", {m.x, m.f});
    const Slot wi1b = slot("GptOssMlp.wi_1_bias", {m.x, m.f});
    const Slot wo = slot("GptOssMlp.wo", {m.x, m.f, m.e});
    const Slot wob = slot("GptOssMlp.wo_bias", {m.x, m.e});
    const std::vector<float>& gu = at(p + "mlp.experts.gate_up_proj");
    const std::vector<float>& gub = at(p + "mlp.experts.gate_up_proj_bias");
    const std::vector<float>& down = at(p + "mlp.experts.down_proj");
    const std::vector<float>& downb = at(p + "mlp.experts.down_proj_bias");
    for (int64_t j = 0; j < m.x; ++j) {
      for (int64_t k = 0; k < m.f; ++k) {
        set(wi0b, {j, k}, gub[j * 2 * m.f + 2 * k]);
        set(wi1b, {j, k}, gub[j * 2 * m.f + 2 * k + 1]);
        for (int64_t i = 0; i < m.e; ++i) {
          set(wi0, {j, i, k}, gu[(j * m.e + i) * 2 * m.f + 2 * k]);
          set(wi1, {j, i, k}, gu[(j * m.e + i) * 2 * m.f + 2 * k + 1]);
          set(wo, {j, k, i}, down[(j * m.f + k) * m.e + i]);
        }
      }
      for (int64_t i = 0; i < m.e; ++i) set(wob, {j, i}, downb[j * m.e + i]);
    }
  }
  return out;
}

void ExpectSameTensors(const std::map<std::string, Values>& expected,
                       const std::map<std::string, Values>& actual) {
  std::vector<std::string> expected_names, actual_names;
  for (const auto& [name, v] : expected) expected_names.push_back(name);
  for (const auto& [name, v] : actual) {
    if (name.rfind("params.params.", 0) == 0) actual_names.push_back(name);
  }
  ASSERT_EQ(expected_names, actual_names);
  for (const auto& [name, want] : expected) {
    const Values& got = actual.at(name);
    EXPECT_EQ(got.dtype, want.dtype) << name;
    ASSERT_EQ(got.shape, want.shape) << name;
    size_t mismatches = 0;
    for (size_t i = 0; i < want.data.size(); ++i) {
      if (!SameValue(got.data[i], want.data[i]) && mismatches++ < 3) {
        ADD_FAILURE() << name << "[" << i << "]: got " << got.data[i] << ", want " << want.data[i];
      }
    }
    EXPECT_EQ(mismatches, 0u) << name;
  }
}

std::vector<std::string> ConvertArgs(const std::string& to, bool scan, const std::string& dtype,
                                     const fs::path& src, const fs::path& dst) {
  std::vector<std::string> args = {"convert", "--to", to, "--quiet"};
  if (to == "maxtext") args.push_back(scan ? "--scan-layers" : "--no-scan-layers");
  if (!dtype.empty()) {
    args.push_back("--save-dtype");
    args.push_back(dtype);
  }
  args.push_back(src.string());
  args.push_back(dst.string());
  return args;
}

// --- bfloat16 sources: mapping and byte-exact round trips.

struct Bf16Case {
  std::string name;
  json config;
  bool scan;
  std::string save_dtype;  // "" = the default (bfloat16)
};

void PrintTo(const Bf16Case& c, std::ostream* os) { *os << c.name; }

class Bf16ConversionTest : public ::testing::TestWithParam<Bf16Case> {};

TEST_P(Bf16ConversionTest, EveryMaxTextTensorMatchesAndTheWayBackIsBitExact) {
  const Bf16Case& c = GetParam();
  TempDir tmp;
  // Small shards: the source is a real index + shards set.
  testing::WriteHfCheckpoint(tmp / "src", c.config, Bf16Tensors(c.config), DType::kBF16,
                             /*seed=*/11, /*max_shard_bytes=*/48 << 10);
  ASSERT_TRUE(fs::exists(tmp / "src" / "model.safetensors.index.json"));
  CliRun to_mt = RunCli(ConvertArgs("maxtext", c.scan, c.save_dtype, tmp / "src", tmp / "mt"));
  ASSERT_EQ(to_mt.exit_code, 0) << to_mt.err;
  EXPECT_THAT(to_mt.out, HasSubstr("with plugin gptoss"));
  const DType dtype = c.save_dtype == "float32" ? DType::kF32 : DType::kBF16;
  const auto mt = testing::ReadOrbax(tmp / "mt");
  ExpectSameTensors(
      ExpectedMaxText(ValuesOf(testing::ReadHf(tmp / "src")), c.config, c.scan, dtype), mt);

  // No arithmetic anywhere in this mapping: bfloat16 and float32 both come
  // back byte for byte.
  CliRun to_hf = RunCli(ConvertArgs("hf", c.scan, "", tmp / "mt", tmp / "hf"));
  ASSERT_EQ(to_hf.exit_code, 0) << to_hf.err;
  EXPECT_EQ(testing::ReadHfBytes(tmp / "hf"), testing::ReadHfBytes(tmp / "src"));
  const json config = ReadJson(tmp / "hf" / "config.json");
  EXPECT_EQ(config, c.config);
}

INSTANTIATE_TEST_SUITE_P(
    Variants, Bf16ConversionTest,
    ::testing::Values(Bf16Case{"scanned_bf16", Bf16Config(), true, ""},
                      Bf16Case{"scanned_f32", Bf16Config(), true, "float32"},
                      Bf16Case{"unscanned_bf16", Bf16Config(), false, ""},
                      Bf16Case{"unscanned_f32", Bf16Config(), false, "float32"},
                      // An odd layer count has no 2-layer scan, but converts unscanned.
                      Bf16Case{"five_layers_unscanned_f32", Bf16Config(5), false, "float32"},
                      Bf16Case{"tied_no_attention_bias_scanned_f32",
                               [] {
                                 json c = Bf16Config(4);
                                 c["tie_word_embeddings"] = true;
                                 c["attention_bias"] = false;
                                 return c;
                               }(),
                               true, "float32"}),
    [](const ::testing::TestParamInfo<Bf16Case>& info) { return info.param.name; });

TEST(Bf16LayoutTest, ScannedShapesFollowTheTwoLayerCycle) {
  TempDir tmp;
  const json config = Bf16Config();
  testing::WriteHfCheckpoint(tmp / "src", config, Bf16Tensors(config), DType::kBF16, /*seed=*/3);
  CliRun run = RunCli(ConvertArgs("maxtext", true, "", tmp / "src", tmp / "mt"));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto mt = testing::ReadOrbax(tmp / "mt");
  auto shape = [&](const std::string& name) {
    auto it = mt.find("params.params.decoder.layers.layers_1." + name);
    return it == mt.end() ? Shape{} : it->second.shape;
  };
  // 6 layers -> 3 per block; layer axis 1 everywhere, experts stay on axis 0.
  EXPECT_EQ(shape("GptOssMlp.wi_0"), (Shape{5, 3, 24, 20}));
  EXPECT_EQ(shape("GptOssMlp.wi_1_bias"), (Shape{5, 3, 20}));
  EXPECT_EQ(shape("GptOssMlp.wo"), (Shape{5, 3, 20, 24}));
  EXPECT_EQ(shape("GptOssMlp.wo_bias"), (Shape{5, 3, 24}));
  EXPECT_EQ(shape("GptOssMlp.gate.kernel"), (Shape{24, 3, 5}));
  EXPECT_EQ(shape("GptOssMlp.gate.bias"), (Shape{5, 3}));
  EXPECT_EQ(shape("GptOssAttention.query.kernel"), (Shape{24, 3, 4, 10}));
  EXPECT_EQ(shape("GptOssAttention.query.bias"), (Shape{4, 3, 10}));
  EXPECT_EQ(shape("GptOssAttention.key.bias"), (Shape{1, 3, 10}));
  EXPECT_EQ(shape("GptOssAttention.out.kernel"), (Shape{4, 3, 10, 24}));
  EXPECT_EQ(shape("GptOssAttention.sinks"), (Shape{4, 3}));
  EXPECT_EQ(shape("pre_self_attention_layer_norm.scale"), (Shape{24, 3}));
  // Block 1 holds HF layers 1, 3, 5: slice 2 of its sinks is layer 5's.
  const auto hf = testing::ReadHf(tmp / "src");
  const Values& sinks = mt.at("params.params.decoder.layers.layers_1.GptOssAttention.sinks");
  for (int n = 0; n < 4; ++n) {
    EXPECT_EQ(sinks.data[n * 3 + 2], hf.at("model.layers.5.self_attn.sinks").data[n]);
  }
}

TEST(Bf16LayoutTest, RestackMovesEverySliceWhereTheUnscannedRulesPutIt) {
  TempDir tmp;
  const json config = Bf16Config();
  testing::WriteHfCheckpoint(tmp / "src", config, Bf16Tensors(config), DType::kBF16, /*seed=*/4);
  ASSERT_EQ(RunCli(ConvertArgs("maxtext", true, "", tmp / "src", tmp / "scanned")).exit_code, 0);
  ASSERT_EQ(RunCli(ConvertArgs("maxtext", false, "", tmp / "src", tmp / "unscanned")).exit_code, 0);
  CliRun down = RunCli({"restack", "--quiet", "--no-scan-layers", (tmp / "scanned").string(),
                        (tmp / "restacked").string()});
  ASSERT_EQ(down.exit_code, 0) << down.err;
  auto params = [](const std::map<std::string, Values>& all) {
    std::map<std::string, Values> p;
    for (const auto& [name, v] : all)
      if (name.rfind("params.params.", 0) == 0) p[name] = v;
    return p;
  };
  ExpectSameTensors(params(testing::ReadOrbax(tmp / "unscanned")),
                    testing::ReadOrbax(tmp / "restacked"));
}

// --- MXFP4 sources.

struct Mxfp4Source {
  json config;
  HfValues logical;  // the bfloat16-release tensors, dequantized here
  std::map<std::string, std::string> bytes;
};

std::string Bf16Bytes(const std::vector<float>& values) {
  std::string bytes(values.size() * 2, '\0');
  EXPECT_TRUE(FromF32(DType::kBF16, values.data(), bytes.data(), values.size()).ok());
  return bytes;
}

// An MXFP4 checkpoint as openai/gpt-oss-* lays it out: bfloat16 everywhere
// but the expert kernels, which are U8 blocks [X, out, in/32, 16] and U8
// scales [X, out, in/32]. Scales are mostly near 127; layer 1's gate_up and
// layer 2's down_proj also carry the extremes (0, 1 and 254, whose products
// overflow to inf; 255, E8M0's NaN, is refused: see Mxfp4VectorsTest).
Mxfp4Source WriteMxfp4Checkpoint(const fs::path& dir, uint32_t seed) {
  Mxfp4Source src;
  src.config = Mxfp4Config();
  const ModelDims m = DimsOf(src.config);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::uniform_int_distribution<int> scale(118, 134);
  std::vector<safetensors::TensorWithData> data;
  for (const testing::HfTensorSpec& spec : Bf16Tensors(src.config)) {
    const bool gate_up = spec.name.find("experts.gate_up_proj") != std::string::npos &&
                         spec.name.find("bias") == std::string::npos;
    const bool down = spec.name.find("experts.down_proj") != std::string::npos &&
                      spec.name.find("bias") == std::string::npos;
    if (!gate_up && !down) {
      std::vector<float> values(static_cast<size_t>(NumElementsUnchecked(spec.shape)));
      for (float& v : values) v = testing::RoundTo(DType::kBF16, normal(rng));
      src.bytes[spec.name] = Bf16Bytes(values);
      data.push_back({{spec.name, DType::kBF16, spec.shape}, src.bytes[spec.name]});
      src.logical[spec.name] = std::move(values);
      continue;
    }
    // Stored transposed: rows are the out-features, blocks run along in.
    const int64_t rows = gate_up ? 2 * m.f : m.e, in = gate_up ? m.e : m.f, groups = in / 32;
    std::string blocks(static_cast<size_t>(m.x * rows * groups * 16), '\0');
    std::string scales(static_cast<size_t>(m.x * rows * groups), '\0');
    for (char& b : blocks) b = static_cast<char>(rng());
    for (char& s : scales) s = static_cast<char>(scale(rng));
    const bool extremes = (gate_up && spec.name.find("layers.1.") != std::string::npos) ||
                          (down && spec.name.find("layers.2.") != std::string::npos);
    if (extremes) {
      scales[0] = 0;
      scales[groups + 1] = 1;
      scales[scales.size() / 2] = static_cast<char>(254);
      scales[scales.size() - 1] = static_cast<char>(254);
    }
    const std::vector<float> deq = DequantizeReference(blocks, scales, m.x * rows, groups);
    std::vector<float> logical(deq.size());
    for (int64_t j = 0; j < m.x; ++j)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < in; ++i)
          logical[(j * in + i) * rows + r] = deq[(j * rows + r) * in + i];
    src.logical[spec.name] = std::move(logical);
    src.bytes[spec.name + "_blocks"] = blocks;
    src.bytes[spec.name + "_scales"] = scales;
    data.push_back({{spec.name + "_blocks", DType::kU8, {m.x, rows, groups, 16}}, blocks});
    data.push_back({{spec.name + "_scales", DType::kU8, {m.x, rows, groups}}, scales});
  }
  fs::create_directories(dir);
  EXPECT_TRUE(WriteFile(dir / "config.json", src.config.dump(2)).ok());
  Status written = safetensors::WriteCheckpoint(dir, data, /*max_shard_bytes=*/64 << 10);
  EXPECT_TRUE(written.ok()) << written.message();
  return src;
}

TEST(Mxfp4ConversionTest, ExpertsAreDequantizedInTheStreamAndExportedAsBf16) {
  TempDir tmp;
  const Mxfp4Source src = WriteMxfp4Checkpoint(tmp / "src", /*seed=*/17);
  ASSERT_TRUE(fs::exists(tmp / "src" / "model.safetensors.index.json"));
  // The extremes really are in there: inf (6 * 2^127) and subnormals among
  // the dequantized values.
  const std::vector<float>& extreme = src.logical.at("model.layers.1.mlp.experts.gate_up_proj");
  EXPECT_TRUE(std::any_of(extreme.begin(), extreme.end(), [](float v) { return std::isinf(v); }));
  EXPECT_TRUE(std::any_of(extreme.begin(), extreme.end(),
                          [](float v) { return std::fpclassify(v) == FP_SUBNORMAL; }));

  for (const auto& [scan, dtype] : {std::pair<bool, std::string>{true, ""},
                                    {false, "float32"},
                                    {true, "float32"},
                                    {false, "source"}}) {
    SCOPED_TRACE(std::string(scan ? "scanned " : "unscanned ") + (dtype.empty() ? "bf16" : dtype));
    const std::string name = std::string(scan ? "scanned-" : "unscanned-") + dtype;
    CliRun to_mt = RunCli(ConvertArgs("maxtext", scan, dtype, tmp / "src", tmp / name));
    ASSERT_EQ(to_mt.exit_code, 0) << to_mt.err;
    // --save-dtype applies after dequantization; "source" keeps the
    // bfloat16 tensors and writes the dequantized experts as bfloat16.
    const DType saved = dtype == "float32" ? DType::kF32 : DType::kBF16;
    ExpectSameTensors(ExpectedMaxText(src.logical, src.config, scan, saved),
                      testing::ReadOrbax(tmp / name));

    CliRun to_hf = RunCli(ConvertArgs("hf", scan, "", tmp / name, tmp / (name + "-hf")));
    ASSERT_EQ(to_hf.exit_code, 0) << to_hf.err;
    // The bfloat16 release's names and layout; everything that was bfloat16
    // comes back byte for byte, the experts equal the independent
    // dequantization, rounded to bfloat16 (a no-op for MXFP4 values).
    const auto exported = testing::ReadHf(tmp / (name + "-hf"));
    const auto exported_bytes = testing::ReadHfBytes(tmp / (name + "-hf"));
    std::set<std::string> names, want_names;
    for (const auto& [n, v] : exported) names.insert(n);
    for (const auto& [n, v] : src.logical) want_names.insert(n);
    EXPECT_EQ(names, want_names);
    for (const auto& [n, want] : src.logical) {
      if (!exported.count(n)) continue;
      const Values& got = exported.at(n);
      EXPECT_EQ(got.dtype, DType::kBF16) << n;
      if (src.bytes.count(n)) {
        EXPECT_EQ(exported_bytes.at(n), src.bytes.at(n)) << n;
        continue;
      }
      ASSERT_EQ(got.data.size(), want.size()) << n;
      size_t mismatches = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        if (!SameValue(got.data[i], testing::RoundTo(DType::kBF16, want[i])) && mismatches++ < 3) {
          ADD_FAILURE() << n << "[" << i << "]: got " << got.data[i] << ", want " << want[i];
        }
      }
    }
    EXPECT_EQ(exported.at("model.layers.0.mlp.experts.gate_up_proj").shape, (Shape{3, 64, 192}));
    EXPECT_EQ(exported.at("model.layers.0.mlp.experts.down_proj").shape, (Shape{3, 96, 64}));
    // A config for what was written: no quantization_config, bfloat16.
    json config = ReadJson(tmp / (name + "-hf") / "config.json");
    EXPECT_FALSE(config.contains("quantization_config"));
    EXPECT_EQ(config["torch_dtype"], "bfloat16");
    json want_config = src.config;
    want_config.erase("quantization_config");
    want_config["torch_dtype"] = "bfloat16";
    EXPECT_EQ(config, want_config);
  }
}

TEST(Mxfp4ConversionTest, RestackOfAnMxfp4SourcedCheckpointEqualsTheUnscannedConversion) {
  TempDir tmp;
  WriteMxfp4Checkpoint(tmp / "src", /*seed=*/23);
  ASSERT_EQ(RunCli(ConvertArgs("maxtext", true, "", tmp / "src", tmp / "scanned")).exit_code, 0);
  ASSERT_EQ(RunCli(ConvertArgs("maxtext", false, "", tmp / "src", tmp / "unscanned")).exit_code, 0);
  CliRun down = RunCli({"restack", "--quiet", "--no-scan-layers", (tmp / "scanned").string(),
                        (tmp / "restacked").string()});
  ASSERT_EQ(down.exit_code, 0) << down.err;
  std::map<std::string, Values> want;
  for (const auto& [name, v] : testing::ReadOrbax(tmp / "unscanned"))
    if (name.rfind("params.params.", 0) == 0) want[name] = v;
  ExpectSameTensors(want, testing::ReadOrbax(tmp / "restacked"));
}

TEST(Mxfp4ConversionTest, AConfigSayingMxfp4OverBf16WeightsNamesTheMissingBlocks) {
  TempDir tmp;
  json config = Bf16Config(2);
  config["hidden_size"] = 32;
  config["intermediate_size"] = 32;
  config["quantization_config"] = {{"quant_method", "mxfp4"}};
  testing::WriteHfCheckpoint(tmp / "src", config, Bf16Tensors(config), DType::kBF16, /*seed=*/1);
  CliRun run = RunCli(ConvertArgs("maxtext", true, "", tmp / "src", tmp / "mt"));
  EXPECT_NE(run.exit_code, 0);
  EXPECT_THAT(run.err, HasSubstr("model.layers.0.mlp.experts.gate_up_proj_blocks"));
  EXPECT_FALSE(fs::exists(tmp / "mt"));
}

// ---------------------------------------------------------------------------
// The real openai/gpt-oss-20b index and config, at full size.

const fs::path kRealFixture = testing::FixtureDir() / "hf-index" / "gpt-oss-20b";

// Shape and dtype of a tensor of the MXFP4 release, from its config: MXFP4
// expert kernels as U8 blocks/scales, everything else bfloat16.
safetensors::TensorSpec RealSpec(const std::string& name, const json& c) {
  const ModelDims m = DimsOf(c);
  auto ends = [&](const std::string& suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  const std::vector<std::pair<std::string, Shape>> bf16 = {
      {"embed_tokens.weight", {m.v, m.e}},
      {"lm_head.weight", {m.v, m.e}},
      {"layernorm.weight", {m.e}},
      {"model.norm.weight", {m.e}},
      {"q_proj.weight", {m.nq * m.d, m.e}},
      {"k_proj.weight", {m.nkv * m.d, m.e}},
      {"v_proj.weight", {m.nkv * m.d, m.e}},
      {"o_proj.weight", {m.e, m.nq * m.d}},
      {"q_proj.bias", {m.nq * m.d}},
      {"k_proj.bias", {m.nkv * m.d}},
      {"v_proj.bias", {m.nkv * m.d}},
      {"o_proj.bias", {m.e}},
      {"sinks", {m.nq}},
      {"router.weight", {m.x, m.e}},
      {"router.bias", {m.x}},
      {"gate_up_proj_bias", {m.x, 2 * m.f}},
      {"down_proj_bias", {m.x, m.e}},
  };
  for (const auto& [suffix, shape] : bf16) {
    if (ends(suffix)) return {name, DType::kBF16, shape};
  }
  if (ends("gate_up_proj_blocks")) return {name, DType::kU8, {m.x, 2 * m.f, m.e / 32, 16}};
  if (ends("gate_up_proj_scales")) return {name, DType::kU8, {m.x, 2 * m.f, m.e / 32}};
  if (ends("down_proj_blocks")) return {name, DType::kU8, {m.x, m.e, m.f / 32, 16}};
  if (ends("down_proj_scales")) return {name, DType::kU8, {m.x, m.e, m.f / 32}};
  ADD_FAILURE() << "no shape for " << name;
  return {name, DType::kInvalid, {}};
}

// The real index and config next to shards named as the index names them,
// each with its real header, sized but sparse: no tensor data is written.
// `config` replaces the real config (the tensor names do not depend on the
// number of experts, which GPT-OSS keeps inside each tensor).
void WriteSparseRealCheckpoint(const fs::path& dir, const json& config) {
  fs::create_directories(dir);
  ASSERT_TRUE(WriteFile(dir / "config.json", config.dump()).ok());
  fs::copy_file(kRealFixture / "model.safetensors.index.json",
                dir / "model.safetensors.index.json");
  const json index = ReadJson(kRealFixture / "model.safetensors.index.json");
  std::map<std::string, std::vector<safetensors::TensorSpec>> by_file;
  for (const auto& [name, file] : index["weight_map"].items()) {
    by_file[file.get<std::string>()].push_back(RealSpec(name, config));
  }
  for (auto& [file, specs] : by_file) {
    Result<safetensors::ShardPlan> plan =
        safetensors::PlanShards(specs, std::numeric_limits<uint64_t>::max());
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    ASSERT_EQ(plan->shards.size(), 1u);
    plan->shards[0].file_name = file;
    Result<std::unique_ptr<safetensors::ShardWriter>> writer =
        safetensors::ShardWriter::Create(dir, plan->shards[0]);
    ASSERT_TRUE(writer.ok()) << writer.status().message();
  }
}

void WriteSparseRealCheckpoint(const fs::path& dir) {
  WriteSparseRealCheckpoint(dir, ReadJson(kRealFixture / "config.json"));
}

// The largest working set of one unit (engine::UnitMemory) of the plan of
// the real gpt-oss-20b index under `config`, over all units and over the
// expert units only.
struct UnitMemoryPeaks {
  uint64_t all = 0;
  uint64_t experts = 0;
  uint64_t expert_tensor_bytes = 0;  // one layer's gate_up_proj_blocks
};
UnitMemoryPeaks PeaksOf(const fs::path& dir, const json& config) {
  UnitMemoryPeaks peaks;
  WriteSparseRealCheckpoint(dir, config);
  Result<std::unique_ptr<safetensors::Checkpoint>> ckpt = safetensors::Checkpoint::Open(dir);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status().message();
  Result<std::unique_ptr<Adapter>> adapter = MakeAdapter(config);
  EXPECT_TRUE(adapter.ok()) << adapter.status().message();
  if (!ckpt.ok() || !adapter.ok()) return peaks;
  Result<RuleSet> rules =
      (*adapter)->Rules(json{{"direction", "to_maxtext"}, {"scan_layers", true}}.dump());
  EXPECT_TRUE(rules.ok()) << rules.status().message();
  Result<engine::Plan> plan =
      engine::PlanToMaxText(*rules, **ckpt, engine::ToMaxTextOptions{}, "plugin 'gptoss'");
  EXPECT_TRUE(plan.ok()) << plan.status().message();
  if (!plan.ok()) return peaks;
  for (const engine::Unit& unit : plan->units) {
    const uint64_t memory = engine::UnitMemory(*plan, unit);
    peaks.all = std::max(peaks.all, memory);
    if (unit.hf_leading_index >= 0) peaks.experts = std::max(peaks.experts, memory);
  }
  for (const engine::HfTensor& t : plan->hf_tensors) {
    if (t.name == "model.layers.0.mlp.experts.gate_up_proj_blocks") {
      peaks.expert_tensor_bytes = static_cast<uint64_t>(NumElementsUnchecked(t.shape));
    }
  }
  return peaks;
}

TEST(RealIndexTest, MemoryPerUnitDoesNotGrowWithTheNumberOfExperts) {
  // gpt-oss-20b as released (32 experts) and the same model with 128
  // experts (gpt-oss-120b's count): the experts go one at a time, so the
  // largest unit - and with it the memory a conversion needs - is the same.
  TempDir tmp;
  const json config = ReadJson(kRealFixture / "config.json");
  json wide = config;
  wide["num_local_experts"] = 128;
  const UnitMemoryPeaks x32 = PeaksOf(tmp / "x32", config);
  const UnitMemoryPeaks x128 = PeaksOf(tmp / "x128", wide);
  ASSERT_GT(x32.experts, 0u);
  EXPECT_EQ(x128.experts, x32.experts);
  EXPECT_EQ(x128.all, x32.all);
  EXPECT_EQ(x128.expert_tensor_bytes, 4 * x32.expert_tensor_bytes);
  // One expert of gate_up: 5760 x 2880 values, blocks 8.3 MB, as f32 66 MB,
  // and two bfloat16 outputs of 16.6 MB: well under 256 MiB, where a whole
  // layer's experts (32 of them) took over 4 GiB.
  EXPECT_LT(x32.experts, uint64_t{256} << 20);
}

// MaxText's gpt-oss-20b parameter shapes (maxtext-mapping.md §6.8), from the
// dimensions: per-layer shapes, with L/2 inserted at axis 1 when scanned.
std::map<std::string, Shape> MaxTextShapes(const ModelDims& m, bool scan) {
  std::map<std::string, Shape> out = {{"token_embedder.embedding", {m.v, m.e}},
                                      {"decoder.decoder_norm.scale", {m.e}},
                                      {"decoder.logits_dense.kernel", {m.e, m.v}}};
  const std::vector<std::pair<std::string, Shape>> per_layer = {
      {"pre_self_attention_layer_norm.scale", {m.e}},
      {"post_self_attention_layer_norm.scale", {m.e}},
      {"GptOssAttention.query.kernel", {m.e, m.nq, m.d}},
      {"GptOssAttention.key.kernel", {m.e, m.nkv, m.d}},
      {"GptOssAttention.value.kernel", {m.e, m.nkv, m.d}},
      {"GptOssAttention.out.kernel", {m.nq, m.d, m.e}},
      {"GptOssAttention.query.bias", {m.nq, m.d}},
      {"GptOssAttention.key.bias", {m.nkv, m.d}},
      {"GptOssAttention.value.bias", {m.nkv, m.d}},
      {"GptOssAttention.out.bias", {m.e}},
      {"GptOssAttention.sinks", {m.nq}},
      {"GptOssMlp.gate.kernel", {m.e, m.x}},
      {"GptOssMlp.gate.bias", {m.x}},
      {"GptOssMlp.wi_0", {m.x, m.e, m.f}},
      {"GptOssMlp.wi_1", {m.x, m.e, m.f}},
      {"GptOssMlp.wi_0_bias", {m.x, m.f}},
      {"GptOssMlp.wi_1_bias", {m.x, m.f}},
      {"GptOssMlp.wo", {m.x, m.f, m.e}},
      {"GptOssMlp.wo_bias", {m.x, m.e}},
  };
  for (const auto& [name, shape] : per_layer) {
    if (scan) {
      Shape stacked = shape;
      stacked.insert(stacked.begin() + 1, m.layers / 2);
      for (int b = 0; b < 2; ++b)
        out["decoder.layers.layers_" + std::to_string(b) + "." + name] = stacked;
    } else {
      for (int64_t l = 0; l < m.layers; ++l)
        out["decoder.layers_" + std::to_string(l) + "." + name] = shape;
    }
  }
  return out;
}

TEST(RealIndexTest, GptOss20bPlansWithEveryTensorAccountedFor) {
  TempDir tmp;
  WriteSparseRealCheckpoint(tmp / "src");
  Result<std::unique_ptr<safetensors::Checkpoint>> ckpt =
      safetensors::Checkpoint::Open(tmp / "src");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().message();
  // The index's total_size agrees with the shapes and dtypes above: they are
  // the release's.
  EXPECT_TRUE((*ckpt)->warnings().empty()) << (*ckpt)->warnings()[0];
  const json index = ReadJson(kRealFixture / "model.safetensors.index.json");
  const uint64_t total_size = index["metadata"]["total_size"];
  EXPECT_EQ((*ckpt)->total_bytes(), total_size);
  std::set<std::string> index_names;
  for (const auto& [name, file] : index["weight_map"].items()) index_names.insert(name);
  ASSERT_EQ(index_names.size(), 459u);

  const json config = ReadJson(kRealFixture / "config.json");
  Result<std::unique_ptr<Adapter>> adapter = MakeAdapter(config);
  ASSERT_TRUE(adapter.ok()) << adapter.status().message();
  ModelDims m = DimsOf(config);
  EXPECT_EQ(m.layers, 24);
  for (const bool scan : {true, false}) {
    SCOPED_TRACE(scan ? "scanned" : "unscanned");
    Result<RuleSet> rules =
        (*adapter)->Rules(json{{"direction", "to_maxtext"}, {"scan_layers", scan}}.dump());
    ASSERT_TRUE(rules.ok()) << rules.status().message();
    Result<engine::Plan> plan =
        engine::PlanToMaxText(*rules, **ckpt, engine::ToMaxTextOptions{}, "plugin 'gptoss'");
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    // Every tensor of the release is read, none ignored, every byte counted.
    std::set<std::string> read;
    for (const engine::HfTensor& t : plan->hf_tensors) read.insert(t.name);
    EXPECT_EQ(read, index_names);
    EXPECT_TRUE(plan->ignored.empty());
    EXPECT_EQ(plan->read_bytes, total_size);
    // 15 per-layer mappings and 2 converted one expert (of 32) at a time,
    // x 24 layers, plus embedding, norm and lm_head.
    EXPECT_EQ(plan->units.size(), 3u + (15u + 2u * 32u) * 24u);
    // Exactly MaxText's gpt-oss-20b parameters, in bfloat16.
    std::map<std::string, Shape> written;
    for (const engine::MtTensor& t : plan->mt_tensors) {
      written[t.name.substr(std::string("params.params.").size())] = t.shape;
      EXPECT_EQ(t.dtype, DType::kBF16) << t.name;
    }
    EXPECT_EQ(written, MaxTextShapes(m, scan));
    if (scan) {
      // The shapes maxtext-mapping.md §6.8 lists for the scanned 20b.
      const std::string b = "decoder.layers.layers_0.";
      EXPECT_EQ(written[b + "GptOssMlp.wi_0"], (Shape{32, 12, 2880, 2880}));
      EXPECT_EQ(written[b + "GptOssMlp.wi_0_bias"], (Shape{32, 12, 2880}));
      EXPECT_EQ(written[b + "GptOssMlp.wo"], (Shape{32, 12, 2880, 2880}));
      EXPECT_EQ(written[b + "GptOssMlp.gate.kernel"], (Shape{2880, 12, 32}));
      EXPECT_EQ(written[b + "GptOssMlp.gate.bias"], (Shape{32, 12}));
      EXPECT_EQ(written[b + "GptOssAttention.query.kernel"], (Shape{2880, 12, 64, 64}));
      EXPECT_EQ(written[b + "GptOssAttention.query.bias"], (Shape{64, 12, 64}));
      EXPECT_EQ(written[b + "GptOssAttention.out.kernel"], (Shape{64, 12, 64, 2880}));
      EXPECT_EQ(written[b + "GptOssAttention.out.bias"], (Shape{2880, 12}));
      EXPECT_EQ(written[b + "GptOssAttention.sinks"], (Shape{64, 12}));
      EXPECT_EQ(written["token_embedder.embedding"], (Shape{201088, 2880}));
      EXPECT_EQ(written["decoder.logits_dense.kernel"], (Shape{2880, 201088}));
    }
  }
}

TEST(RealIndexTest, GptOss20bExportsTheBf16ReleaseNames) {
  // The names MaxText's dequantize_mxfp4.py gives the dequantized release:
  // `<name>_blocks` becomes `<name>`, `<name>_scales` goes.
  const json index = ReadJson(kRealFixture / "model.safetensors.index.json");
  std::set<std::string> want;
  for (const auto& [name, file] : index["weight_map"].items()) {
    const std::string blocks = "_blocks", scales = "_scales";
    if (name.size() > scales.size() &&
        name.compare(name.size() - scales.size(), scales.size(), scales) == 0) {
      continue;
    }
    if (name.size() > blocks.size() &&
        name.compare(name.size() - blocks.size(), blocks.size(), blocks) == 0) {
      want.insert(name.substr(0, name.size() - blocks.size()));
    } else {
      want.insert(name);
    }
  }
  Result<std::unique_ptr<Adapter>> adapter = MakeAdapter(ReadJson(kRealFixture / "config.json"));
  ASSERT_TRUE(adapter.ok()) << adapter.status().message();
  for (const bool scan : {true, false}) {
    Result<RuleSet> rules =
        (*adapter)->Rules(json{{"direction", "to_hf"}, {"scan_layers", scan}}.dump());
    ASSERT_TRUE(rules.ok()) << rules.status().message();
    std::map<std::string, Shape> names;
    for (const Rule& rule : rules->rules) {
      for (const OpSpec& op : rule.ops) EXPECT_NE(op.kind, OpKind::kCustom);
      int64_t slices = rule.stack.empty() ? 1 : rule.stack[0].count;
      for (int64_t i = 0; i < slices; ++i) {
        for (const TensorDecl& in : rule.hf_inputs) {
          names[engine::ResolveTemplate(
              in.name, rule,
              rule.stack.empty() ? std::vector<int64_t>{} : std::vector<int64_t>{i})] = in.dims;
        }
      }
    }
    std::set<std::string> got;
    for (const auto& [name, shape] : names) got.insert(name);
    EXPECT_EQ(got, want);
    EXPECT_EQ(names["model.layers.23.mlp.experts.gate_up_proj"], (Shape{32, 2880, 5760}));
    EXPECT_EQ(names["model.layers.23.mlp.experts.down_proj"], (Shape{32, 2880, 2880}));
  }
}

// configs/models/gpt-oss-20b.yml (and -120b: 128 experts, 36 layers), transcribed.
json MaxTextYml(int64_t experts, int64_t layers) {
  return {{"base_emb_dim", 2880},
          {"base_num_query_heads", 64},
          {"base_num_kv_heads", 8},
          {"head_dim", 64},
          {"sliding_window_size", 128},
          {"attention_bias", true},
          {"attention_sink", true},
          {"rope_type", "yarn"},
          {"rope_max_timescale", 150000},
          {"max_position_embeddings", 131072},
          {"original_max_position_embeddings", 4096},
          {"rope_factor", 32},
          {"beta_fast", 32},
          {"beta_slow", 1},
          {"rope_interleave", false},
          {"rope_truncate", false},
          {"rope_attention_scaling", true},
          {"base_mlp_dim", 2880},
          {"base_moe_mlp_dim", 2880},
          {"mlp_activations", {"sigmoid", "linear"}},
          {"mlp_activations_limit", 7.0},
          {"routed_bias", true},
          {"mlp_bias", true},
          {"num_experts", experts},
          {"num_experts_per_tok", 4},
          {"base_num_decoder_layers", layers},
          {"vocab_size", 201088},
          {"normalization_layer_epsilon", 1.0e-5},
          {"enable_dropout", false},
          {"logits_via_embedding", false},
          {"decoder_block", "gpt_oss"},
          {"inhomogeneous_layer_cycle_interval", 2}};
}

// Same keys, equal values (numbers by value: the yml's 32 is the config's 32.0).
void ExpectSameSettings(const json& got, const json& want) {
  std::set<std::string> got_keys, want_keys;
  for (const auto& [k, v] : got.items()) got_keys.insert(k);
  for (const auto& [k, v] : want.items()) want_keys.insert(k);
  EXPECT_EQ(got_keys, want_keys);
  for (const auto& [k, v] : want.items()) {
    if (!got.contains(k)) continue;
    if (v.is_number()) {
      EXPECT_TRUE(got[k].is_number()) << k << ": " << got[k];
      EXPECT_EQ(got[k].get<double>(), v.get<double>()) << k;
    } else {
      EXPECT_EQ(got[k], v) << k;
    }
  }
}

json TranslateToMaxText(const json& config) {
  Result<std::unique_ptr<Adapter>> adapter = MakeAdapter(config);
  EXPECT_TRUE(adapter.ok()) << adapter.status().message();
  if (!adapter.ok()) return json();
  Result<std::string> text = (*adapter)->TranslateConfig(CKB_TO_MAXTEXT);
  EXPECT_TRUE(text.ok()) << text.status().message();
  return text.ok() ? json::parse(*text) : json();
}

TEST(RealIndexTest, GptOss20bConfigTranslatesToMaxTextsModelYml) {
  ExpectSameSettings(TranslateToMaxText(ReadJson(kRealFixture / "config.json")),
                     MaxTextYml(32, 24));
}

TEST(RealIndexTest, TransformersV5RopeParametersTranslateTheSame) {
  // transformers 5 writes rope_parameters (with rope_theta inside) instead
  // of rope_scaling + rope_theta, and `dtype` instead of `torch_dtype`.
  json config = ReadJson(kRealFixture / "config.json");
  json rope = config["rope_scaling"];
  rope["rope_theta"] = config["rope_theta"];
  config.erase("rope_scaling");
  config.erase("rope_theta");
  config["rope_parameters"] = rope;
  config["dtype"] = "bfloat16";
  ExpectSameSettings(TranslateToMaxText(config), MaxTextYml(32, 24));
}

TEST(RealIndexTest, GptOss20bExportConfigDropsTheQuantizationConfig) {
  const json source = ReadJson(kRealFixture / "config.json");
  Result<std::unique_ptr<Adapter>> adapter = MakeAdapter(source);
  ASSERT_TRUE(adapter.ok()) << adapter.status().message();
  Result<std::string> text = (*adapter)->TranslateConfig(CKB_TO_HF);
  ASSERT_TRUE(text.ok()) << text.status().message();
  json want = source;
  want.erase("quantization_config");
  want["torch_dtype"] = "bfloat16";
  EXPECT_EQ(json::parse(*text), want);
}

TEST(PresetTest, PresetsAreMaxTextsHfConfigsAndTranslateToItsYml) {
  for (const auto& [name, experts, layers] :
       {std::tuple<std::string, int64_t, int64_t>{"gpt-oss-20b", 32, 24},
        {"gpt-oss-120b", 128, 36}}) {
    SCOPED_TRACE(name);
    Result<std::string> text = PresetConfig(Plugin(), name);
    ASSERT_TRUE(text.ok()) << text.status().message();
    const json preset = json::parse(*text);
    EXPECT_EQ(preset["num_local_experts"], experts);
    EXPECT_EQ(preset["num_hidden_layers"], layers);
    EXPECT_FALSE(preset.contains("quantization_config"));
    EXPECT_EQ(preset["layer_types"], LayerTypes(layers));
    ExpectSameSettings(TranslateToMaxText(preset), MaxTextYml(experts, layers));
  }
  // Apart from the quantization_config (and the dtype the bfloat16 release
  // names), the 20b preset is the real release's config.
  json real = ReadJson(kRealFixture / "config.json");
  real.erase("quantization_config");
  json preset = json::parse(*PresetConfig(Plugin(), "gpt-oss-20b"));
  EXPECT_EQ(preset["torch_dtype"], "bfloat16");
  preset.erase("torch_dtype");
  // hf_model_configs.py also names rope_theta inside rope_scaling.
  preset["rope_scaling"].erase("rope_theta");
  EXPECT_EQ(preset, real);

  Result<std::string> unknown = PresetConfig(Plugin(), "gpt-oss-7b");
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
}

TEST(PresetTest, ModelPresetDrivesExportAndIsCheckedAgainstTheArrays) {
  // --model names the HF config of a checkpoint (MaxText's own carry none);
  // it wins over ckptbridge's record, and the plan checks it against the arrays.
  TempDir tmp;
  const json config = Bf16Config();
  testing::WriteHfCheckpoint(tmp / "src", config, Bf16Tensors(config), DType::kBF16, /*seed=*/2);
  ASSERT_EQ(RunCli(ConvertArgs("maxtext", true, "", tmp / "src", tmp / "mt")).exit_code, 0);
  // The 20b preset does not fit these tiny arrays: the plan says so, naming both shapes.
  CliRun run = RunCli({"convert", "--to", "hf", "--quiet", "--model", "gpt-oss-20b",
                       (tmp / "mt").string(), (tmp / "hf").string()});
  EXPECT_NE(run.exit_code, 0);
  EXPECT_THAT(run.err, HasSubstr("[201088, 2880]"));
}

// ---------------------------------------------------------------------------
// Refusals.

struct Refusal {
  std::string name;
  json config;
  StatusCode code;
  std::string message;
};

void PrintTo(const Refusal& r, std::ostream* os) { *os << r.name; }

class RefusalTest : public ::testing::TestWithParam<Refusal> {};

TEST_P(RefusalTest, CreateSaysWhy) {
  Result<std::unique_ptr<Adapter>> adapter = MakeAdapter(GetParam().config);
  ASSERT_FALSE(adapter.ok());
  EXPECT_EQ(adapter.status().code(), GetParam().code);
  EXPECT_THAT(adapter.status().message(), HasSubstr(GetParam().message));
}

json With(json c, const std::string& key, json value) {
  c[key] = std::move(value);
  return c;
}

INSTANTIATE_TEST_SUITE_P(
    Configs, RefusalTest,
    ::testing::Values(
        Refusal{"other_quantization",
                With(Bf16Config(), "quantization_config", {{"quant_method", "fp8"}}),
                StatusCode::kUnsupported, "quantization_config.quant_method 'fp8'"},
        Refusal{"mlx_quantization",
                With(Bf16Config(), "quantization", {{"bits", 4}, {"group_size", 64}}),
                StatusCode::kUnsupported, "MLX-quantized"},
        Refusal{"mxfp4_partial_block", With(With(Mxfp4Config(), "hidden_size", 40), "head_dim", 10),
                StatusCode::kInvalidArgument, "hidden_size 40 is not a multiple of 32"},
        Refusal{"mxfp4_partial_block_mlp", With(Mxfp4Config(), "intermediate_size", 100),
                StatusCode::kInvalidArgument, "intermediate_size 100 is not a multiple of 32"},
        Refusal{"attention_pattern",
                With(Bf16Config(2), "layer_types", {"full_attention", "sliding_attention"}),
                StatusCode::kUnsupported,
                "layer_types[0] is \"full_attention\" but MaxText's gpt_oss decoder has "
                "'sliding_attention' there"},
        Refusal{"layer_types_length", With(Bf16Config(4), "layer_types", LayerTypes(2)),
                StatusCode::kInvalidArgument, "layer_types must list one entry per layer (4)"},
        Refusal{"missing_experts",
                [] {
                  json c = Bf16Config();
                  c.erase("num_local_experts");
                  return c;
                }(),
                StatusCode::kInvalidArgument, "missing integer 'num_local_experts'"}),
    [](const ::testing::TestParamInfo<Refusal>& info) { return info.param.name; });

TEST(RefusalCliTest, OddLayerCountsCannotBeScanned) {
  TempDir tmp;
  const json config = Bf16Config(5);
  testing::WriteHfCheckpoint(tmp / "src", config, Bf16Tensors(config), DType::kBF16, /*seed=*/1);
  CliRun run = RunCli(ConvertArgs("maxtext", true, "", tmp / "src", tmp / "mt"));
  EXPECT_NE(run.exit_code, 0);
  EXPECT_THAT(run.err, HasSubstr("num_hidden_layers 5 is odd"));
  EXPECT_THAT(run.err, HasSubstr("use --no-scan-layers"));
  EXPECT_FALSE(fs::exists(tmp / "mt"));
}

}  // namespace
}  // namespace ckptbridge
