// The deepseek plugin: DeepSeek V2, V3 (dense + MoE layers, MTP layer) and
// V3.2 (indexer), BF16 and FP8 sources, end to end through the CLI.
//
// Every MaxText tensor is checked against values computed here from the HF
// input with plain index arithmetic written from MaxText's mapping
// (shared/docs/maxtext-mapping.md §2.2, §6.9; param_mapping.py DEEPSEEK_*),
// never with the converter's ops. FP8 sources are checked against an
// independent e4m3 decoder and DeepSeek's weight_dequant definition
// (W[i][j] = f32(W_fp8[i][j]) * S[i / 128][j / 128], partial edge blocks).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "host/base/file.h"
#include "host/base/numeric.h"
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
using testing::RunCli;
using testing::TempDir;
using testing::Values;
using testing::deepseek::TinyV3;  // tests/testing/quantized.h

constexpr char kParams[] = "params.params.";

// ---------------------------------------------------------------------------
// Independent reference arithmetic.

// float8_e4m3fn by its definition: (-1)^s * 2^(e-7) * (1 + m/8), subnormals
// 2^-6 * m/8, S.1111.111 NaN, no infinities.
double E4m3Value(uint8_t b) {
  const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  const double magnitude =
      e == 0 ? (m / 8.0) * std::pow(2.0, -6) : (1.0 + m / 8.0) * std::pow(2.0, e - 7);
  return s ? -magnitude : magnitude;
}

// DeepSeek's weight_dequant, in f32 arithmetic.
std::vector<float> Dequantize(const std::vector<uint8_t>& w, int64_t rows, int64_t cols,
                              const std::vector<float>& scale, int64_t block_rows,
                              int64_t block_cols) {
  const int64_t scale_cols = (cols + block_cols - 1) / block_cols;
  std::vector<float> out(w.size());
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      const float s = scale[(i / block_rows) * scale_cols + j / block_cols];
      out[i * cols + j] = static_cast<float>(E4m3Value(w[i * cols + j])) * s;
    }
  }
  return out;
}

bool SameFloat(float a, float b) {
  return FloatBits(a) == FloatBits(b) || (std::isnan(a) && std::isnan(b));
}

// ---------------------------------------------------------------------------
// Configs: small, with every dimension different, so a swapped axis shows.

json TinyV2() {
  return {{"architectures", {"DeepseekV2ForCausalLM"}},
          {"model_type", "deepseek_v2"},
          {"vocab_size", 56},
          {"hidden_size", 40},
          {"intermediate_size", 48},
          {"moe_intermediate_size", 12},
          {"num_hidden_layers", 3},
          {"first_k_dense_replace", 1},
          {"num_attention_heads", 3},
          {"num_key_value_heads", 3},
          {"q_lora_rank", nullptr},
          {"kv_lora_rank", 20},
          {"qk_nope_head_dim", 8},
          {"qk_rope_head_dim", 6},
          {"v_head_dim", 10},
          {"n_routed_experts", 5},
          {"n_shared_experts", 2},
          {"num_experts_per_tok", 2},
          {"moe_layer_freq", 1},
          {"topk_method", "greedy"},
          {"scoring_func", "softmax"},
          {"n_group", 1},
          {"topk_group", 1},
          {"routed_scaling_factor", 1.0},
          {"rms_norm_eps", 1e-6},
          {"rope_theta", 10000},
          {"max_position_embeddings", 2048},
          {"rope_scaling",
           {{"type", "yarn"},
            {"factor", 40.0},
            {"original_max_position_embeddings", 4096},
            {"beta_fast", 32.0},
            {"beta_slow", 1.0},
            {"mscale", 0.707},
            {"mscale_all_dim", 0.707}}},
          {"tie_word_embeddings", false},
          {"torch_dtype", "bfloat16"}};
}

json TinyV32() {
  json c = TinyV3();
  c["architectures"] = {"DeepseekV32ForCausalLM"};
  c["model_type"] = "deepseek_v32";
  c["num_hidden_layers"] = 3;
  c["first_k_dense_replace"] = 1;
  c["index_n_heads"] = 3;
  c["index_head_dim"] = 10;
  c["index_topk"] = 16;
  return c;
}

// V3.2-shaped (a superset of V3) FP8 release with 128x128 blocks; hidden 136
// and widths that are not multiples of 128 give partial edge blocks.
json Fp8V32() {
  json c = TinyV32();
  c["vocab_size"] = 32;
  c["hidden_size"] = 136;
  c["intermediate_size"] = 40;
  c["moe_intermediate_size"] = 20;
  c["num_attention_heads"] = 2;
  c["num_key_value_heads"] = 2;
  c["q_lora_rank"] = 24;
  c["kv_lora_rank"] = 16;
  c["qk_nope_head_dim"] = 8;
  c["qk_rope_head_dim"] = 8;
  c["v_head_dim"] = 8;
  c["n_routed_experts"] = 3;
  c["index_n_heads"] = 2;
  c["index_head_dim"] = 12;
  c["quantization_config"] = testing::deepseek::Fp8QuantizationConfig(128, 128);
  return c;
}

// ---------------------------------------------------------------------------
// The mapping, written from MaxText's tables: per layer, HF suffix -> MaxText
// sub-key, HF shape, MaxText per-layer (per-expert) shape, and whether the
// hook is reshape_kernel (transpose, then row-major reshape) or identity.

struct Dims {
  int64_t v, e, f, fm, layers, first_dense, nq, ql, kv, nope, rope, vd, x, shared, hi, di, mtp;
  bool bias, indexer, tied;
  explicit Dims(const json& c) {
    v = c["vocab_size"];
    e = c["hidden_size"];
    f = c["intermediate_size"];
    fm = c["moe_intermediate_size"];
    layers = c["num_hidden_layers"];
    first_dense = c["first_k_dense_replace"];
    nq = c["num_attention_heads"];
    ql = c["q_lora_rank"].is_null() ? 0 : c["q_lora_rank"].get<int64_t>();
    kv = c["kv_lora_rank"];
    nope = c["qk_nope_head_dim"];
    rope = c["qk_rope_head_dim"];
    vd = c["v_head_dim"];
    x = c["n_routed_experts"];
    shared = c["n_shared_experts"];
    indexer = c.contains("index_n_heads");
    hi = indexer ? c["index_n_heads"].get<int64_t>() : 0;
    di = indexer ? c["index_head_dim"].get<int64_t>() : 0;
    mtp = c.value("num_nextn_predict_layers", 0);
    bias = c["topk_method"] == "noaux_tc";
    tied = c.value("tie_word_embeddings", false);
  }
};

struct LayerEntry {
  std::string hf;  // after model.layers.{i}.
  std::string mt;  // after the layer container
  Shape hf_shape;
  Shape mt_shape;  // one layer (one expert)
  bool kernel = false;
  bool expert = false;
  bool fp8 = false;  // quantized in DeepSeek's fp8 releases
};

std::vector<LayerEntry> LayerSpec(const Dims& d, bool dense) {
  const int64_t e = d.e, qk = d.nope + d.rope;
  std::vector<LayerEntry> t = {
      {"input_layernorm.weight", "pre_self_attention_layer_norm.scale", {e}, {e}},
      {"post_attention_layernorm.weight", "post_self_attention_layer_norm.scale", {e}, {e}},
  };
  if (d.ql == 0) {
    t.push_back({"self_attn.q_proj.weight",
                 "self_attention.query.kernel",
                 {d.nq * qk, e},
                 {e, d.nq, qk},
                 true,
                 false,
                 true});
  } else {
    t.push_back({"self_attn.q_a_proj.weight",
                 "self_attention.wq_a.kernel",
                 {d.ql, e},
                 {e, d.ql},
                 true,
                 false,
                 true});
    t.push_back({"self_attn.q_a_layernorm.weight", "self_attention.q_norm.scale", {d.ql}, {d.ql}});
    t.push_back({"self_attn.q_b_proj.weight",
                 "self_attention.wq_b.kernel",
                 {d.nq * qk, d.ql},
                 {d.ql, d.nq, qk},
                 true,
                 false,
                 true});
  }
  t.push_back({"self_attn.kv_a_proj_with_mqa.weight",
               "self_attention.wkv_a.kernel",
               {d.kv + d.rope, e},
               {e, d.kv + d.rope},
               true,
               false,
               true});
  t.push_back({"self_attn.kv_a_layernorm.weight", "self_attention.kv_norm.scale", {d.kv}, {d.kv}});
  t.push_back({"self_attn.kv_b_proj.weight",
               "self_attention.wkv_b.kernel",
               {d.nq * (d.nope + d.vd), d.kv},
               {d.kv, d.nq, d.nope + d.vd},
               true,
               false,
               true});
  t.push_back({"self_attn.o_proj.weight",
               "self_attention.out.kernel",
               {e, d.nq * d.vd},
               {d.nq, d.vd, e},
               true,
               false,
               true});
  if (d.indexer) {
    t.push_back({"self_attn.indexer.wq_b.weight",
                 "self_attention.indexer.wq_b.kernel",
                 {d.hi * d.di, d.ql},
                 {d.ql, d.hi, d.di},
                 true,
                 false,
                 true});
    t.push_back({"self_attn.indexer.wk.weight",
                 "self_attention.indexer.wk.kernel",
                 {d.di, e},
                 {e, d.di},
                 true,
                 false,
                 true});
    t.push_back(
        {"self_attn.indexer.k_norm.weight", "self_attention.indexer.k_norm.scale", {d.di}, {d.di}});
    t.push_back(
        {"self_attn.indexer.k_norm.bias", "self_attention.indexer.k_norm.bias", {d.di}, {d.di}});
    t.push_back({"self_attn.indexer.weights_proj.weight",
                 "self_attention.indexer.weights_proj.kernel",
                 {d.hi, e},
                 {e, d.hi},
                 true});
  }
  if (dense) {
    t.push_back({"mlp.gate_proj.weight", "mlp.wi_0.kernel", {d.f, e}, {e, d.f}, true, false, true});
    t.push_back({"mlp.up_proj.weight", "mlp.wi_1.kernel", {d.f, e}, {e, d.f}, true, false, true});
    t.push_back({"mlp.down_proj.weight", "mlp.wo.kernel", {e, d.f}, {d.f, e}, true, false, true});
    return t;
  }
  const int64_t fs = d.shared * d.fm;
  const std::string m = "DeepSeekMoeBlock_0.";
  t.push_back({"mlp.shared_experts.gate_proj.weight",
               m + "shared_experts.wi_0.kernel",
               {fs, e},
               {e, fs},
               true,
               false,
               true});
  t.push_back({"mlp.shared_experts.up_proj.weight",
               m + "shared_experts.wi_1.kernel",
               {fs, e},
               {e, fs},
               true,
               false,
               true});
  t.push_back({"mlp.shared_experts.down_proj.weight",
               m + "shared_experts.wo.kernel",
               {e, fs},
               {fs, e},
               true,
               false,
               true});
  t.push_back({"mlp.gate.weight", m + "MoeBlock_0.gate.kernel", {d.x, e}, {e, d.x}, true});
  if (d.bias) {
    t.push_back({"mlp.gate.e_score_correction_bias", m + "MoeBlock_0.gate.bias", {d.x}, {d.x}});
  }
  t.push_back({"mlp.experts.{e}.gate_proj.weight",
               m + "MoeBlock_0.wi_0",
               {d.fm, e},
               {e, d.fm},
               true,
               true,
               true});
  t.push_back({"mlp.experts.{e}.up_proj.weight",
               m + "MoeBlock_0.wi_1",
               {d.fm, e},
               {e, d.fm},
               true,
               true,
               true});
  t.push_back({"mlp.experts.{e}.down_proj.weight",
               m + "MoeBlock_0.wo",
               {e, d.fm},
               {d.fm, e},
               true,
               true,
               true});
  return t;
}

std::string ExpertName(const std::string& name, int64_t expert) {
  std::string s = name;
  const size_t at = s.find("{e}");
  if (at != std::string::npos) s.replace(at, 3, std::to_string(expert));
  return s;
}

// Every HF tensor of a checkpoint of config `c` (with its MTP layers).
struct HfSpec {
  std::string name;
  Shape shape;
  bool fp8 = false;
};
std::vector<HfSpec> HfTensors(const json& c) {
  const Dims d(c);
  std::vector<HfSpec> t = {{"model.embed_tokens.weight", {d.v, d.e}}, {"model.norm.weight", {d.e}}};
  if (!d.tied) t.push_back({"lm_head.weight", {d.v, d.e}});
  auto layer = [&](int64_t l, bool dense) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const LayerEntry& le : LayerSpec(d, dense)) {
      for (int64_t j = 0; j < (le.expert ? d.x : 1); ++j) {
        t.push_back({p + ExpertName(le.hf, j), le.hf_shape, le.fp8});
      }
    }
  };
  for (int64_t l = 0; l < d.layers; ++l) layer(l, l < d.first_dense);
  for (int64_t k = 0; k < d.mtp; ++k) {
    const int64_t l = d.layers + k;
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "enorm.weight", {d.e}});
    t.push_back({p + "hnorm.weight", {d.e}});
    t.push_back({p + "eh_proj.weight", {d.e, 2 * d.e}});
    t.push_back({p + "embed_tokens.weight", {d.v, d.e}});
    t.push_back({p + "shared_head.norm.weight", {d.e}});
    t.push_back({p + "shared_head.head.weight", {d.v, d.e}});
    layer(l, false);
  }
  return t;
}

// ---------------------------------------------------------------------------
// Expected MaxText tensors.

// Writes `slice` into `full`: each axis `a` in `fixed` held at index
// fixed.at(a), the slice running row-major over the other axes.
void PutSlice(Values& full, const std::map<size_t, int64_t>& fixed,
              const std::vector<float>& slice) {
  const size_t rank = full.shape.size();
  std::vector<int64_t> strides(rank, 1);
  for (size_t i = rank; i-- > 1;) strides[i - 1] = strides[i] * full.shape[i];
  std::vector<size_t> free_axes;
  int64_t base = 0;
  for (size_t a = 0; a < rank; ++a) {
    auto it = fixed.find(a);
    if (it == fixed.end()) {
      free_axes.push_back(a);
    } else {
      base += it->second * strides[a];
    }
  }
  std::vector<int64_t> index(free_axes.size(), 0);
  for (size_t n = 0; n < slice.size(); ++n) {
    int64_t offset = base;
    for (size_t k = 0; k < free_axes.size(); ++k) offset += index[k] * strides[free_axes[k]];
    full.data[offset] = slice[n];
    for (size_t k = free_axes.size(); k-- > 0;) {
      if (++index[k] < full.shape[free_axes[k]]) break;
      index[k] = 0;
    }
  }
}

// HF [out, in] -> [in, out] (reshape_kernel's transpose; the reshape that
// follows keeps the row-major order).
std::vector<float> Transposed(const std::vector<float>& w, const Shape& hf_shape) {
  const int64_t out = hf_shape[0], in = hf_shape[1];
  std::vector<float> t(w.size());
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) t[i * out + o] = w[o * in + i];
  return t;
}

std::vector<float> Rounded(std::vector<float> v, DType dtype) {
  for (float& x : v) x = testing::RoundTo(dtype, x);
  return v;
}

// `hf`: every HF tensor as f32 (dequantized already for fp8 sources).
std::map<std::string, Values> ExpectedMaxText(const std::map<std::string, Values>& hf,
                                              const json& c, bool scan, bool mtp, DType dtype) {
  const Dims d(c);
  std::map<std::string, Values> out;
  auto tensor = [&](const std::string& name, const Shape& shape) -> Values& {
    Values& t = out[kParams + name];
    if (t.shape.empty()) {
      t.dtype = dtype;
      t.shape = shape;
      t.data.assign(static_cast<size_t>(NumElementsUnchecked(shape)), 0.0f);
    }
    return t;
  };
  auto at = [&](const std::string& name) -> const std::vector<float>& {
    auto it = hf.find(name);
    EXPECT_NE(it, hf.end()) << name;
    return it->second.data;
  };

  PutSlice(tensor("token_embedder.embedding", {d.v, d.e}), {},
           Rounded(at("model.embed_tokens.weight"), dtype));
  PutSlice(tensor("decoder.decoder_norm.scale", {d.e}), {},
           Rounded(at("model.norm.weight"), dtype));
  if (!d.tied) {
    PutSlice(tensor("decoder.logits_dense.kernel", {d.e, d.v}), {},
             Rounded(Transposed(at("lm_head.weight"), {d.v, d.e}), dtype));
  }

  // One HF layer into a container: at layer-axis position `index` of the
  // stacked tensors (sized beforehand), or unstacked when `index` < 0.
  auto layer = [&](int64_t l, bool dense, const std::string& container, int64_t index) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const LayerEntry& le : LayerSpec(d, dense)) {
      Shape shape = le.mt_shape;
      if (le.expert) shape.insert(shape.begin(), d.x);
      Values& t = tensor(container + "." + le.mt, shape);
      for (int64_t j = 0; j < (le.expert ? d.x : 1); ++j) {
        const std::vector<float>& w = at(p + ExpertName(le.hf, j));
        std::map<size_t, int64_t> fixed;
        if (le.expert) fixed[0] = j;
        if (index >= 0) fixed[1] = index;
        PutSlice(t, fixed, Rounded(le.kernel ? Transposed(w, le.hf_shape) : w, dtype));
      }
    }
  };
  // Pre-size the stacked tensors (layer axis 1).
  auto stacked_layers = [&](bool dense, const std::string& container, int64_t count) {
    for (const LayerEntry& le : LayerSpec(d, dense)) {
      Shape shape = le.mt_shape;
      if (le.expert) shape.insert(shape.begin(), d.x);
      shape.insert(shape.begin() + 1, count);
      tensor(container + "." + le.mt, shape);
    }
  };
  const int64_t moe_count = d.layers - d.first_dense;
  if (scan) {
    if (d.first_dense > 0) stacked_layers(true, "decoder.dense_layers", d.first_dense);
    if (moe_count > 0) stacked_layers(false, "decoder.moe_layers", moe_count);
  }
  for (int64_t l = 0; l < d.layers; ++l) {
    const bool dense = l < d.first_dense;
    const int64_t j = dense ? l : l - d.first_dense;
    const std::string group = dense ? "decoder.dense_layers" : "decoder.moe_layers";
    if (scan) {
      layer(l, dense, group, j);
    } else {
      layer(l, dense, group + "_" + std::to_string(j), -1);
    }
  }
  if (mtp) {
    for (int64_t k = 1; k <= d.mtp; ++k) {
      const int64_t l = d.layers + k - 1;
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const std::string m =
          "mtp_block.mtp_layer_" + std::to_string(k) + ".mtp_" + std::to_string(k) + "_";
      PutSlice(tensor(m + "embedding_norm.scale", {d.e}), {},
               Rounded(at(p + "enorm.weight"), dtype));
      PutSlice(tensor(m + "hidden_state_norm.scale", {d.e}), {},
               Rounded(at(p + "hnorm.weight"), dtype));
      PutSlice(tensor(m + "projection.kernel", {2 * d.e, d.e}), {},
               Rounded(Transposed(at(p + "eh_proj.weight"), {d.e, 2 * d.e}), dtype));
      layer(l, false, m + "transformer_layer", -1);
    }
  }
  return out;
}

void ExpectSameTensors(const std::map<std::string, Values>& expected,
                       const std::map<std::string, Values>& actual) {
  std::vector<std::string> expected_names, actual_names;
  for (const auto& [name, v] : expected) expected_names.push_back(name);
  for (const auto& [name, v] : actual) {
    if (name.rfind(kParams, 0) == 0) actual_names.push_back(name);
  }
  ASSERT_EQ(expected_names, actual_names);
  for (const auto& [name, want] : expected) {
    const Values& got = actual.at(name);
    EXPECT_EQ(got.dtype, want.dtype) << name;
    ASSERT_EQ(got.shape, want.shape) << name;
    size_t mismatches = 0;
    for (size_t i = 0; i < want.data.size(); ++i) {
      if (!SameFloat(got.data[i], want.data[i]) && mismatches++ < 3) {
        ADD_FAILURE() << name << "[" << i << "]: got " << got.data[i] << ", want " << want.data[i];
      }
    }
    EXPECT_EQ(mismatches, 0u) << name;
  }
}

// ---------------------------------------------------------------------------
// Source checkpoints.

struct Source {
  std::map<std::string, Values> values;  // f32 view (dequantized for fp8)
  std::vector<safetensors::TensorWithData> tensors;
};

void AddTensor(Source& s, const std::string& name, const Shape& shape, DType dtype,
               std::vector<float> values) {
  std::string bytes(values.size() * DTypeSize(dtype), '\0');
  ASSERT_TRUE(FromF32(dtype, values.data(), bytes.data(), values.size()).ok());
  s.tensors.push_back({{name, dtype, shape}, std::move(bytes)});
  s.values[name] = {dtype, shape, Rounded(std::move(values), dtype)};
}

// BF16 checkpoint of random bf16-exact values. The MTP layers' embed_tokens
// and shared_head.head repeat the main model's, as in DeepSeek's releases.
Source BuildBf16(const fs::path& dir, const json& config, uint32_t seed,
                 uint64_t max_shard_bytes = uint64_t{3} << 30) {
  Source s;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  for (const HfSpec& spec : HfTensors(config)) {
    std::vector<float> v(static_cast<size_t>(NumElementsUnchecked(spec.shape)));
    if (spec.name.find(".embed_tokens.weight") != std::string::npos &&
        spec.name != "model.embed_tokens.weight") {
      v = s.values.at("model.embed_tokens.weight").data;
    } else if (spec.name.find("shared_head.head.weight") != std::string::npos) {
      v = s.values.at("lm_head.weight").data;
    } else {
      for (float& x : v) x = testing::RoundTo(DType::kBF16, normal(rng));
    }
    AddTensor(s, spec.name, spec.shape, DType::kBF16, std::move(v));
  }
  fs::create_directories(dir);
  EXPECT_TRUE(WriteFile(dir / "config.json", config.dump(2)).ok());
  Status written = safetensors::WriteCheckpoint(dir, s.tensors, max_shard_bytes);
  EXPECT_TRUE(written.ok()) << written.message();
  return s;
}

// An FP8 release: the weights DeepSeek quantizes as e4m3 codes (every code,
// NaN included) with f32 weight_scale_inv per 128x128 block; the rest bf16,
// the router bias and indexer k_norm f32 (as DeepSeek stores them).
// `values` holds the dequantized weights and no scales.
Source BuildFp8(const fs::path& dir, const json& config, uint32_t seed) {
  Source s;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::uniform_int_distribution<int> code(0, 255);
  std::uniform_int_distribution<int> exponent(-14, -4);
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  bool extremes_placed = false;
  for (const HfSpec& spec : HfTensors(config)) {
    const size_t n = static_cast<size_t>(NumElementsUnchecked(spec.shape));
    if (spec.fp8) {
      const int64_t rows = spec.shape[0], cols = spec.shape[1];
      const Shape scale_shape = {(rows + 127) / 128, (cols + 127) / 128};
      std::vector<uint8_t> w(n);
      for (uint8_t& b : w) b = static_cast<uint8_t>(code(rng));
      std::vector<float> scale(static_cast<size_t>(scale_shape[0] * scale_shape[1]));
      for (float& x : scale) x = std::ldexp(mantissa(rng), exponent(rng));
      // One tensor with two blocks carries extreme scales: a huge one that
      // overflows to infinity for large codes, and a tiny one that makes
      // subnormal products (bf16 keeps f32's exponent range).
      if (!extremes_placed && scale.size() >= 2) {
        scale[0] = 3.0e36f;
        scale[1] = 1.0e-38f;
        extremes_placed = true;
      }
      s.tensors.push_back({{spec.name, DType::kF8E4M3, spec.shape},
                           std::string(reinterpret_cast<const char*>(w.data()), w.size())});
      std::string scale_bytes(scale.size() * 4, '\0');
      std::memcpy(scale_bytes.data(), scale.data(), scale_bytes.size());
      s.tensors.push_back(
          {{spec.name + "_scale_inv", DType::kF32, scale_shape}, std::move(scale_bytes)});
      s.values[spec.name] = {DType::kF8E4M3, spec.shape,
                             Dequantize(w, rows, cols, scale, 128, 128)};
      continue;
    }
    std::vector<float> v(n);
    for (float& x : v) x = normal(rng);
    const bool f32 = spec.name.find("e_score_correction_bias") != std::string::npos ||
                     spec.name.find("k_norm") != std::string::npos;
    AddTensor(s, spec.name, spec.shape, f32 ? DType::kF32 : DType::kBF16, std::move(v));
  }
  EXPECT_TRUE(extremes_placed);
  fs::create_directories(dir);
  EXPECT_TRUE(WriteFile(dir / "config.json", config.dump(2)).ok());
  Status written = safetensors::WriteCheckpoint(dir, s.tensors, 64 << 10);
  EXPECT_TRUE(written.ok()) << written.message();
  return s;
}

json ReadConfig(const fs::path& dir) {
  Result<std::string> text = ReadFile(dir / "config.json");
  EXPECT_TRUE(text.ok());
  return json::parse(*text);
}

std::vector<std::string> ConvertArgs(const std::string& to, bool scan, const std::string& dtype,
                                     bool mtp, const fs::path& src, const fs::path& dst) {
  std::vector<std::string> args = {"convert", "--to", to};
  if (to == "maxtext") args.push_back(scan ? "--scan-layers" : "--no-scan-layers");
  if (!dtype.empty()) {
    args.push_back("--save-dtype");
    args.push_back(dtype);
  }
  if (mtp) args.push_back("--mtp");
  args.push_back(src.string());
  args.push_back(dst.string());
  return args;
}

size_t CountPrefix(const std::vector<safetensors::TensorWithData>& tensors,
                   const std::string& prefix) {
  size_t n = 0;
  for (const auto& t : tensors) n += t.spec.name.rfind(prefix, 0) == 0;
  return n;
}

// ---------------------------------------------------------------------------
// BF16 variants: mapping, MTP handling, bit-exact round trips.

struct Variant {
  std::string name;
  json config;
};

class Bf16VariantTest : public ::testing::TestWithParam<Variant> {};

TEST_P(Bf16VariantTest, EveryMaxTextTensorMatchesTheMappingAndTheWayBackIsBitExact) {
  const json& config = GetParam().config;
  const Dims d(config);
  TempDir tmp;
  const Source src = BuildBf16(tmp / "src", config, /*seed=*/11, /*max_shard_bytes=*/24 << 10);
  const std::string mtp_prefix = "model.layers." + std::to_string(d.layers) + ".";
  const size_t mtp_tensors = CountPrefix(src.tensors, mtp_prefix);
  EXPECT_EQ(mtp_tensors > 0, d.mtp > 0);

  for (const bool scan : {true, false}) {
    for (const std::string dtype : {"float32", "bfloat16"}) {
      SCOPED_TRACE((scan ? "scanned " : "unscanned ") + dtype);
      const std::string tag = std::string(scan ? "s" : "u") + dtype;
      const fs::path mt = tmp / ("mt-" + tag);
      CliRun to_mt = RunCli(ConvertArgs("maxtext", scan, dtype, false, tmp / "src", mt));
      ASSERT_EQ(to_mt.exit_code, 0) << to_mt.err;
      // MTP layers: skipped by default, with a count, never silently.
      if (d.mtp > 0) {
        EXPECT_NE(to_mt.err.find("note: skipped " + std::to_string(mtp_tensors) +
                                 " tensors (multi-token-prediction layer: MaxText's converter "
                                 "maps none; --mtp converts it to MaxText's mtp_block): " +
                                 mtp_prefix),
                  std::string::npos)
            << to_mt.err;
      } else {
        EXPECT_EQ(to_mt.err.find("multi-token"), std::string::npos) << to_mt.err;
      }
      const DType want = dtype == "float32" ? DType::kF32 : DType::kBF16;
      ExpectSameTensors(ExpectedMaxText(src.values, config, scan, false, want),
                        testing::ReadOrbax(mt));

      const fs::path back = tmp / ("hf-" + tag);
      CliRun to_hf = RunCli(ConvertArgs("hf", scan, "", false, mt, back));
      ASSERT_EQ(to_hf.exit_code, 0) << to_hf.err;
      // Layout ops only: every byte comes back, through f32 and through bf16.
      std::map<std::string, std::string> source_bytes = testing::ReadHfBytes(tmp / "src");
      for (auto it = source_bytes.begin(); it != source_bytes.end();) {
        it = it->first.rfind(mtp_prefix, 0) == 0 ? source_bytes.erase(it) : std::next(it);
      }
      EXPECT_EQ(testing::ReadHfBytes(back), source_bytes);
      json exported = ReadConfig(back);
      json original = config;
      EXPECT_EQ(exported, original);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(DeepSeek, Bf16VariantTest,
                         ::testing::Values(Variant{"v2_lite", TinyV2()},
                                           Variant{"v3_dense_moe_mtp", TinyV3()},
                                           Variant{"v32_indexer", TinyV32()},
                                           Variant{"v2_tied_all_moe",
                                                   [] {
                                                     json c = TinyV2();
                                                     c["tie_word_embeddings"] = true;
                                                     c["first_k_dense_replace"] = 0;
                                                     return c;
                                                   }()}),
                         [](const ::testing::TestParamInfo<Variant>& info) {
                           return info.param.name;
                         });

// The MaxText shapes of the stacked tensors, and a few elements located by
// their meaning (head, head dim, latent index), not by flat order.
TEST(DeepSeekMappingTest, ScannedShapesAndElementsByMeaning) {
  const json config = TinyV3();
  TempDir tmp;
  const Source src = BuildBf16(tmp / "src", config, /*seed=*/5);
  CliRun run = RunCli(ConvertArgs("maxtext", true, "float32", false, tmp / "src", tmp / "mt"));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto mt = testing::ReadOrbax(tmp / "mt");
  auto get = [&](const std::string& name) -> const Values& { return mt.at(kParams + name); };
  const std::string moe = "decoder.moe_layers.";
  // q_lora 24, heads 4, qk 12, kv_lora 20, rope 4, v 6, experts 6, Fm 16, 2+2 layers.
  EXPECT_EQ(get(moe + "self_attention.wq_b.kernel").shape, (Shape{24, 2, 4, 12}));
  EXPECT_EQ(get(moe + "self_attention.wkv_a.kernel").shape, (Shape{48, 2, 24}));
  EXPECT_EQ(get(moe + "self_attention.wkv_b.kernel").shape, (Shape{20, 2, 4, 14}));
  EXPECT_EQ(get(moe + "self_attention.out.kernel").shape, (Shape{4, 2, 6, 48}));
  EXPECT_EQ(get(moe + "self_attention.q_norm.scale").shape, (Shape{24, 2}));
  EXPECT_EQ(get(moe + "DeepSeekMoeBlock_0.MoeBlock_0.gate.kernel").shape, (Shape{48, 2, 6}));
  EXPECT_EQ(get(moe + "DeepSeekMoeBlock_0.MoeBlock_0.gate.bias").shape, (Shape{6, 2}));
  EXPECT_EQ(get(moe + "DeepSeekMoeBlock_0.MoeBlock_0.wi_0").shape, (Shape{6, 2, 48, 16}));
  EXPECT_EQ(get(moe + "DeepSeekMoeBlock_0.MoeBlock_0.wo").shape, (Shape{6, 2, 16, 48}));
  EXPECT_EQ(get(moe + "DeepSeekMoeBlock_0.shared_experts.wi_0.kernel").shape, (Shape{48, 2, 16}));
  EXPECT_EQ(get("decoder.dense_layers.mlp.wi_0.kernel").shape, (Shape{48, 2, 56}));
  EXPECT_EQ(get("decoder.dense_layers.self_attention.wq_a.kernel").shape, (Shape{48, 2, 24}));

  auto hf = [&](const std::string& name) -> const std::vector<float>& {
    return src.values.at(name).data;
  };
  // wkv_b[c][layer 1][head n][k] = kv_b_proj of HF layer 3 (moe layer 1) at
  // row n*(nope+v) + k, column c.
  {
    const Values& t = get(moe + "self_attention.wkv_b.kernel");
    const auto& w = hf("model.layers.3.self_attn.kv_b_proj.weight");
    for (int64_t c : {0, 7, 19})
      for (int64_t n : {0, 3})
        for (int64_t k : {0, 9, 13})
          EXPECT_EQ(t.data[((c * 2 + 1) * 4 + n) * 14 + k], w[(n * 14 + k) * 20 + c]);
  }
  // out[n][layer 0][k][i] = o_proj of HF layer 2 at row i, column n*v + k.
  {
    const Values& t = get(moe + "self_attention.out.kernel");
    const auto& w = hf("model.layers.2.self_attn.o_proj.weight");
    for (int64_t n : {1, 3})
      for (int64_t k : {0, 5})
        for (int64_t i : {0, 47})
          EXPECT_EQ(t.data[((n * 2 + 0) * 6 + k) * 48 + i], w[i * 24 + n * 6 + k]);
  }
  // wo[expert 4][layer 1][j][i] = experts.4.down_proj of HF layer 3 at [i][j].
  {
    const Values& t = get(moe + "DeepSeekMoeBlock_0.MoeBlock_0.wo");
    const auto& w = hf("model.layers.3.mlp.experts.4.down_proj.weight");
    for (int64_t j : {0, 15})
      for (int64_t i : {1, 46}) EXPECT_EQ(t.data[((4 * 2 + 1) * 16 + j) * 48 + i], w[i * 16 + j]);
  }
  // gate.bias[x][layer 1] = e_score_correction_bias of HF layer 3.
  {
    const Values& t = get(moe + "DeepSeekMoeBlock_0.MoeBlock_0.gate.bias");
    const auto& w = hf("model.layers.3.mlp.gate.e_score_correction_bias");
    for (int64_t x = 0; x < 6; ++x) EXPECT_EQ(t.data[x * 2 + 1], w[x]);
  }
  // Dense layer 1's wi_0[i][1][j] = gate_proj[j][i]: the dense group starts at HF 0.
  {
    const Values& t = get("decoder.dense_layers.mlp.wi_0.kernel");
    const auto& w = hf("model.layers.1.mlp.gate_proj.weight");
    EXPECT_EQ(t.data[(5 * 2 + 1) * 56 + 33], w[33 * 48 + 5]);
  }
}

// --mtp: the MTP layer becomes MaxText's mtp_block (the layout of
// layers/multi_token_prediction.py, as the standalone converter writes it).
TEST(DeepSeekMtpTest, MtpLayerMapsToTheMtpBlockAndBack) {
  const json config = TinyV3();
  TempDir tmp;
  const Source src = BuildBf16(tmp / "src", config, /*seed=*/9);
  for (const bool scan : {true, false}) {
    SCOPED_TRACE(scan ? "scanned" : "unscanned");
    const fs::path mt = tmp / (scan ? "mt-s" : "mt-u");
    CliRun run = RunCli(ConvertArgs("maxtext", scan, "float32", true, tmp / "src", mt));
    ASSERT_EQ(run.exit_code, 0) << run.err;
    // Only the three shared/unmapped tensors are skipped, each with its reason.
    EXPECT_NE(run.err.find("(multi-token-prediction copy of the embedding"), std::string::npos)
        << run.err;
    EXPECT_NE(run.err.find("(multi-token-prediction final norm"), std::string::npos) << run.err;
    EXPECT_EQ(run.err.find("MaxText's converter maps none"), std::string::npos) << run.err;
    const auto got = testing::ReadOrbax(mt);
    ExpectSameTensors(ExpectedMaxText(src.values, config, scan, true, DType::kF32), got);
    const std::string m = std::string(kParams) + "mtp_block.mtp_layer_1.mtp_1_";
    EXPECT_EQ(got.at(m + "projection.kernel").shape, (Shape{96, 48}));
    EXPECT_EQ(got.at(m + "transformer_layer.DeepSeekMoeBlock_0.MoeBlock_0.wi_0").shape,
              (Shape{6, 48, 16}));
    EXPECT_EQ(got.at(m + "transformer_layer.self_attention.wq_b.kernel").shape, (Shape{24, 4, 12}));

    // Export with --mtp writes the whole HF MTP layer again: its own tensors
    // byte for byte, and the shared ones from the main model (MaxText's MTP
    // block used the decoder's norm, so that is what shared_head.norm holds).
    CliRun back = RunCli(ConvertArgs("hf", scan, "", true, mt, tmp / (scan ? "hf-s" : "hf-u")));
    ASSERT_EQ(back.exit_code, 0) << back.err;
    auto source = testing::ReadHfBytes(tmp / "src");
    source["model.layers.4.shared_head.norm.weight"] = source.at("model.norm.weight");
    EXPECT_EQ(testing::ReadHfBytes(tmp / (scan ? "hf-s" : "hf-u")), source);

    // Without --mtp the export skips the mtp_block, with a note.
    CliRun plain = RunCli({"convert", "--to", "hf", mt.string(),
                           (tmp / (scan ? "hf-plain-s" : "hf-plain-u")).string()});
    ASSERT_EQ(plain.exit_code, 0) << plain.err;
    EXPECT_NE(plain.err.find("(multi-token-prediction block: exported only with --mtp)"),
              std::string::npos)
        << plain.err;
    EXPECT_EQ(testing::ReadHfBytes(tmp / (scan ? "hf-plain-s" : "hf-plain-u"))
                  .count("model.layers.4.eh_proj.weight"),
              0u);
  }
}

// ---------------------------------------------------------------------------
// FP8 sources.

TEST(DeepSeekFp8Test, Fp8ReleaseIsDequantizedInTheConversionAndExportsBf16) {
  const json config = Fp8V32();
  const Dims d(config);
  TempDir tmp;
  const Source src = BuildFp8(tmp / "src", config, /*seed=*/3);
  ASSERT_TRUE(fs::exists(tmp / "src" / "model.safetensors.index.json"));
  // The reference the MaxText side and the export must equal: every weight
  // dequantized by DeepSeek's definition, then rounded to bf16.
  std::map<std::string, std::string> bf16_reference;
  for (const auto& [name, v] : src.values) {
    if (name.rfind("model.layers." + std::to_string(d.layers) + ".", 0) == 0) continue;
    std::vector<float> r = Rounded(v.data, DType::kBF16);
    std::string bytes(r.size() * 2, '\0');
    ASSERT_TRUE(FromF32(DType::kBF16, r.data(), bytes.data(), r.size()).ok());
    bf16_reference[name] = bytes;
  }

  for (const bool scan : {true, false}) {
    for (const std::string dtype : {"bfloat16", "float32"}) {
      SCOPED_TRACE((scan ? "scanned " : "unscanned ") + dtype);
      const std::string tag = std::string(scan ? "s" : "u") + dtype;
      const fs::path mt = tmp / ("mt-" + tag);
      CliRun run = RunCli(ConvertArgs("maxtext", scan, dtype, false, tmp / "src", mt));
      ASSERT_EQ(run.exit_code, 0) << run.err;
      // The MTP layer (fp8 weights and their scales) is skipped as a whole.
      const std::string mtp_prefix = "model.layers." + std::to_string(d.layers) + ".";
      EXPECT_NE(
          run.err.find("note: skipped " + std::to_string(CountPrefix(src.tensors, mtp_prefix)) +
                       " tensors (multi-token-prediction layer"),
          std::string::npos)
          << run.err;
      const DType want = dtype == "float32" ? DType::kF32 : DType::kBF16;
      ExpectSameTensors(ExpectedMaxText(src.values, config, scan, false, want),
                        testing::ReadOrbax(mt));

      const fs::path back = tmp / ("hf-" + tag);
      CliRun to_hf = RunCli(ConvertArgs("hf", scan, "", false, mt, back));
      ASSERT_EQ(to_hf.exit_code, 0) << to_hf.err;
      const json exported = ReadConfig(back);
      EXPECT_FALSE(exported.contains("quantization_config")) << exported.dump();
      EXPECT_EQ(exported["torch_dtype"], "bfloat16");
      const auto result = testing::ReadHfBytes(back);
      std::vector<std::string> got_names, want_names;
      for (const auto& [name, bytes] : result) got_names.push_back(name);
      for (const auto& [name, bytes] : bf16_reference) want_names.push_back(name);
      ASSERT_EQ(got_names, want_names);  // no scales, no MTP layer
      for (const auto& [name, want_bytes] : bf16_reference) {
        const std::string& got_bytes = result.at(name);
        ASSERT_EQ(got_bytes.size(), want_bytes.size()) << name;
        size_t mismatches = 0;
        for (size_t i = 0; i < want_bytes.size() / 2; ++i) {
          uint16_t a, b;
          std::memcpy(&a, got_bytes.data() + 2 * i, 2);
          std::memcpy(&b, want_bytes.data() + 2 * i, 2);
          if (!SameFloat(Bf16ToF32(a), Bf16ToF32(b)) && mismatches++ < 3) {
            ADD_FAILURE() << name << "[" << i << "]: got " << Bf16ToF32(a) << ", want "
                          << Bf16ToF32(b);
          }
        }
        EXPECT_EQ(mismatches, 0u) << name;
      }
    }
  }
  // The extremes really occurred: infinities and NaNs made it through.
  size_t inf = 0, nan = 0, subnormal = 0;
  for (const auto& [name, v] : src.values) {
    for (float x : v.data) {
      inf += std::isinf(x);
      nan += std::isnan(x);
      subnormal += std::fpclassify(x) == FP_SUBNORMAL;
    }
  }
  EXPECT_GT(inf, 0u);
  EXPECT_GT(nan, 0u);
  EXPECT_GT(subnormal, 0u);
}

TEST(DeepSeekFp8Test, MtpLayerOfAnFp8ReleaseIsDequantizedToo) {
  const json config = Fp8V32();
  TempDir tmp;
  const Source src = BuildFp8(tmp / "src", config, /*seed=*/4);
  CliRun run = RunCli(ConvertArgs("maxtext", false, "float32", true, tmp / "src", tmp / "mt"));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  ExpectSameTensors(ExpectedMaxText(src.values, config, false, true, DType::kF32),
                    testing::ReadOrbax(tmp / "mt"));
}

TEST(DeepSeekFp8Test, Fp8ConfigWithUnquantizedWeightsNamesTheMissingScales) {
  json config = Fp8V32();
  TempDir tmp;
  json plain = config;
  plain.erase("quantization_config");
  BuildBf16(tmp / "src", plain, /*seed=*/1);
  ASSERT_TRUE(WriteFile(tmp / "src" / "config.json", config.dump()).ok());
  CliRun run = RunCli(ConvertArgs("maxtext", true, "", false, tmp / "src", tmp / "mt"));
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.err.find("_scale_inv"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(tmp / "mt"));
}

// ---------------------------------------------------------------------------
// The plugin called directly through the host's adapter: FP8 test vectors,
// the rules of the published models, config translation.

const LoadedPlugin& Plugin() {
  static const LoadedPlugin plugin = [] {
    Result<LoadedPlugin> p = LoadPlugin(CKB_DEEPSEEK_PLUGIN_FILE);
    EXPECT_TRUE(p.ok()) << p.status().message();
    return p.ok() ? *p : LoadedPlugin();
  }();
  return plugin;
}

std::unique_ptr<Adapter> MakeAdapter(const json& config) {
  Result<std::unique_ptr<Adapter>> a =
      Adapter::Create(Plugin(), config["model_type"].get<std::string>(), config.dump());
  EXPECT_TRUE(a.ok()) << a.status().message();
  return a.ok() ? std::move(*a) : nullptr;
}

json Preset(const std::string& name) {
  Result<std::string> text = PresetConfig(Plugin(), name);
  EXPECT_TRUE(text.ok()) << text.status().message();
  return text.ok() ? json::parse(*text) : json();
}

json WithBlocks(int64_t rows, int64_t cols) {
  json c = TinyV3();
  c["quantization_config"] = {
      {"quant_method", "fp8"}, {"fmt", "e4m3"}, {"weight_block_size", {rows, cols}}};
  return c;
}

// Runs the dequantization transform on raw inputs.
Status Dequant(const Adapter& adapter, DType wdtype, const Shape& wshape, void* w, DType sdtype,
               const Shape& sshape, void* s, std::vector<float>& out) {
  out.assign(static_cast<size_t>(NumElementsUnchecked(wshape)), -1.0f);
  return adapter.ApplyCustom(1, {{wdtype, wshape, w}, {sdtype, sshape, s}},
                             {{DType::kF32, wshape, out.data()}});
}

TEST(DeepSeekFp8VectorTest, KnownE4m3Codes) {
  auto adapter = MakeAdapter(WithBlocks(128, 128));
  ASSERT_NE(adapter, nullptr);
  // One row of notable codes, scale 1.
  const std::vector<uint8_t> codes = {0x00, 0x80, 0x01, 0x81, 0x07, 0x08, 0x38, 0xb8,
                                      0x3c, 0x7e, 0xfe, 0x7f, 0xff, 0x77, 0x40, 0x30};
  std::vector<uint8_t> w = codes;
  float scale = 1.0f;
  std::vector<float> out;
  ASSERT_TRUE(
      Dequant(*adapter, DType::kF8E4M3, {1, 16}, w.data(), DType::kF32, {1, 1}, &scale, out).ok());
  EXPECT_EQ(FloatBits(out[0]), 0x00000000u);  // +0
  EXPECT_EQ(FloatBits(out[1]), 0x80000000u);  // -0
  EXPECT_EQ(out[2], std::ldexp(1.0f, -9));    // smallest subnormal
  EXPECT_EQ(out[3], -std::ldexp(1.0f, -9));
  EXPECT_EQ(out[4], 7.0f * std::ldexp(1.0f, -9));  // largest subnormal
  EXPECT_EQ(out[5], std::ldexp(1.0f, -6));         // smallest normal
  EXPECT_EQ(out[6], 1.0f);
  EXPECT_EQ(out[7], -1.0f);
  EXPECT_EQ(out[8], 1.5f);
  EXPECT_EQ(out[9], 448.0f);  // largest finite
  EXPECT_EQ(out[10], -448.0f);
  EXPECT_TRUE(std::isnan(out[11]));  // the only NaN codes
  EXPECT_TRUE(std::isnan(out[12]));
  EXPECT_EQ(out[13], 240.0f);  // S.1110.111
  EXPECT_EQ(out[14], 2.0f);
  EXPECT_EQ(out[15], 0.5f);
  // Every code against the independent decoder.
  std::vector<uint8_t> all(256);
  for (int b = 0; b < 256; ++b) all[b] = static_cast<uint8_t>(b);
  ASSERT_TRUE(
      Dequant(*adapter, DType::kF8E4M3, {2, 128}, all.data(), DType::kF32, {1, 1}, &scale, out)
          .ok());
  for (int b = 0; b < 256; ++b) {
    EXPECT_TRUE(SameFloat(out[b], static_cast<float>(E4m3Value(static_cast<uint8_t>(b)))))
        << "code " << b;
  }
}

// Small blocks make many blocks, partial ones at both edges, from small
// tensors; scales take every finite extreme: huge (overflow to inf), tiny
// (subnormal results), negative, zero (0 * NaN code = NaN). Non-finite
// scales are refused (below).
TEST(DeepSeekFp8VectorTest, BlockEdgesAndScaleExtremes) {
  for (const auto& [block_rows, block_cols, rows, cols] :
       {std::tuple<int64_t, int64_t, int64_t, int64_t>{8, 4, 21, 13},
        {128, 128, 130, 257},
        {128, 128, 128, 128},
        {4, 8, 3, 5}}) {
    SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + " in " +
                 std::to_string(block_rows) + "x" + std::to_string(block_cols));
    auto adapter = MakeAdapter(WithBlocks(block_rows, block_cols));
    ASSERT_NE(adapter, nullptr);
    const int64_t srows = (rows + block_rows - 1) / block_rows;
    const int64_t scols = (cols + block_cols - 1) / block_cols;
    std::vector<uint8_t> w(static_cast<size_t>(rows * cols));
    for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
    const std::vector<float> specials = {
        1.0f, 3.0e38f, 1.0e-40f, -2.5f, 0.0f, -0.0f, -3.0e38f, std::ldexp(1.0f, -20), 7.0e-3f};
    std::vector<float> scale(static_cast<size_t>(srows * scols));
    for (size_t i = 0; i < scale.size(); ++i) scale[i] = specials[i % specials.size()];
    std::vector<float> out;
    ASSERT_TRUE(Dequant(*adapter, DType::kF8E4M3, {rows, cols}, w.data(), DType::kF32,
                        {srows, scols}, scale.data(), out)
                    .ok());
    const std::vector<float> want = Dequantize(w, rows, cols, scale, block_rows, block_cols);
    size_t mismatches = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      if (!SameFloat(out[i], want[i]) && mismatches++ < 5) {
        ADD_FAILURE() << "[" << i / cols << "][" << i % cols << "]: got " << out[i] << ", want "
                      << want[i];
      }
    }
    EXPECT_EQ(mismatches, 0u);
    // The last element sits in the last (partial) block.
    const float last_scale = scale.back();
    EXPECT_TRUE(SameFloat(out.back(), static_cast<float>(E4m3Value(w.back())) * last_scale));
  }
}

TEST(DeepSeekFp8VectorTest, OtherScaleAndWeightDtypes) {
  auto adapter = MakeAdapter(WithBlocks(2, 2));
  ASSERT_NE(adapter, nullptr);
  std::vector<uint8_t> w = {0x38, 0x40, 0x30, 0xb8, 0x7e, 0x01};  // 1 2 .5 -1 448 2^-9
  // ue8m0 scales: 2^(b-127); 0xff NaN.
  std::vector<uint8_t> e8m0 = {127, 130, 0xff, 0};
  std::vector<float> out;
  ASSERT_TRUE(
      Dequant(*adapter, DType::kF8E4M3, {2, 3}, w.data(), DType::kF8E8M0, {1, 2}, e8m0.data(), out)
          .ok());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 2.0f);
  EXPECT_EQ(out[2], 0.5f * 8.0f);
  EXPECT_EQ(out[3], -1.0f);
  EXPECT_EQ(out[4], 448.0f);
  EXPECT_EQ(out[5], std::ldexp(1.0f, -9) * 8.0f);
  // bf16 scales.
  std::vector<uint16_t> bf16 = {F32ToBf16(0.25f), F32ToBf16(-3.0f)};
  ASSERT_TRUE(
      Dequant(*adapter, DType::kF8E4M3, {2, 3}, w.data(), DType::kBF16, {1, 2}, bf16.data(), out)
          .ok());
  EXPECT_EQ(out[1], 0.5f);
  EXPECT_EQ(out[2], -1.5f);
  // A bf16 weight with scales (a re-saved checkpoint) is scaled the same way.
  std::vector<uint16_t> wb = {F32ToBf16(1.0f), F32ToBf16(-2.0f), F32ToBf16(3.0f),
                              F32ToBf16(4.0f), F32ToBf16(5.0f),  F32ToBf16(6.0f)};
  float fs[2] = {2.0f, 0.5f};
  ASSERT_TRUE(
      Dequant(*adapter, DType::kBF16, {2, 3}, wb.data(), DType::kF32, {1, 2}, fs, out).ok());
  EXPECT_EQ(out, (std::vector<float>{2.0f, -4.0f, 1.5f, 8.0f, 10.0f, 3.0f}));
}

// A NaN or infinite scale is refused whatever its dtype, naming the block
// [row, column] of the scale grid and the value as stored.
TEST(DeepSeekFp8VectorTest, NonFiniteScalesAreRefusedNamingTheBlock) {
  auto adapter = MakeAdapter(WithBlocks(2, 2));
  ASSERT_NE(adapter, nullptr);
  // A [5, 6] weight in 2x2 blocks: a [3, 3] scale grid.
  std::vector<uint8_t> w(30, 0x38);
  std::vector<float> out;
  const std::string refused = "weight_scale_inv block [2, 1] is ";
  const std::string why =
      "; a block scale must be finite, or the whole block dequantizes to "
      "NaN or infinity";
  for (const auto& [bits, shown] :
       std::vector<std::pair<uint32_t, std::string>>{{0x7fc00000u, "NaN (float32 0x7fc00000)"},
                                                     {0xff800001u, "NaN (float32 0xff800001)"},
                                                     {0x7f800000u, "+inf (float32 0x7f800000)"},
                                                     {0xff800000u, "-inf (float32 0xff800000)"}}) {
    std::vector<float> s(9, 1.0f);
    std::memcpy(&s[7], &bits, 4);
    Status status =
        Dequant(*adapter, DType::kF8E4M3, {5, 6}, w.data(), DType::kF32, {3, 3}, s.data(), out);
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << shown;
    EXPECT_EQ(status.message(), "plugin 'deepseek': fp8 dequantization: " + refused + shown + why);
  }
  std::vector<uint16_t> bf16(9, F32ToBf16(1.0f));
  bf16[7] = 0xff80;  // -inf
  Status status =
      Dequant(*adapter, DType::kF8E4M3, {5, 6}, w.data(), DType::kBF16, {3, 3}, bf16.data(), out);
  EXPECT_EQ(status.message(),
            "plugin 'deepseek': fp8 dequantization: " + refused + "-inf (bfloat16 0xff80)" + why);
  std::vector<uint8_t> e8m0(9, 127);
  e8m0[7] = 0xff;  // float8_e8m0fnu's only NaN
  status =
      Dequant(*adapter, DType::kF8E4M3, {5, 6}, w.data(), DType::kF8E8M0, {3, 3}, e8m0.data(), out);
  EXPECT_EQ(status.message(), "plugin 'deepseek': fp8 dequantization: " + refused +
                                  "NaN (float8_e8m0fnu 0xff)" + why);
  // A bfloat16 weight carrying scales is checked the same way.
  std::vector<uint16_t> wb(30, F32ToBf16(1.0f));
  std::vector<float> s(9, 1.0f);
  s[0] = std::numeric_limits<float>::quiet_NaN();
  status = Dequant(*adapter, DType::kBF16, {5, 6}, wb.data(), DType::kF32, {3, 3}, s.data(), out);
  EXPECT_NE(status.message().find("weight_scale_inv block [0, 0] is NaN"), std::string::npos)
      << status.message();
}

TEST(DeepSeekFp8VectorTest, WrongScaleShapeIsAnError) {
  auto adapter = MakeAdapter(WithBlocks(128, 128));
  ASSERT_NE(adapter, nullptr);
  std::vector<uint8_t> w(130 * 4, 0x38);
  std::vector<float> s(1, 1.0f), out;
  Status status =
      Dequant(*adapter, DType::kF8E4M3, {130, 4}, w.data(), DType::kF32, {1, 1}, s.data(), out);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("weight_scale_inv has shape [1, 1] but a [130, 4] weight in "
                                  "128x128 blocks needs [2, 1]"),
            std::string::npos)
      << status.message();
}

// The published models: rule shapes as MaxText's tables give them
// (maxtext-mapping.md §6.9), from the presets' config.json alone.
const Rule* FindRule(const RuleSet& rules, const std::string& mt_name) {
  for (const Rule& r : rules.rules) {
    for (const TensorDecl& t : r.mt_outputs) {
      if (t.name == mt_name) return &r;
    }
  }
  return nullptr;
}

Shape MtShape(const RuleSet& rules, const std::string& mt_name) {
  const Rule* r = FindRule(rules, mt_name);
  EXPECT_NE(r, nullptr) << mt_name;
  if (!r) return {};
  for (const TensorDecl& t : r->mt_outputs) {
    if (t.name == mt_name) return t.dims;
  }
  return {};
}

RuleSet RulesOf(const json& config, const json& options) {
  auto adapter = MakeAdapter(config);
  if (!adapter) return {};
  Result<RuleSet> rules = adapter->Rules(options.dump());
  EXPECT_TRUE(rules.ok()) << rules.status().message();
  return rules.ok() ? *rules : RuleSet();
}

TEST(DeepSeekPresetTest, PublishedModelsHaveMaxTextsShapes) {
  const json scanned = {{"direction", "to_maxtext"}, {"scan_layers", true}};
  {
    const RuleSet r = RulesOf(Preset("deepseek3-671b"), scanned);
    const std::string m = "decoder.moe_layers.";
    EXPECT_EQ(MtShape(r, m + "self_attention.wq_b.kernel"), (Shape{1536, 58, 128, 192}));
    EXPECT_EQ(MtShape(r, m + "self_attention.wkv_a.kernel"), (Shape{7168, 58, 576}));
    EXPECT_EQ(MtShape(r, m + "self_attention.wkv_b.kernel"), (Shape{512, 58, 128, 256}));
    EXPECT_EQ(MtShape(r, m + "self_attention.out.kernel"), (Shape{128, 58, 128, 7168}));
    EXPECT_EQ(MtShape(r, m + "DeepSeekMoeBlock_0.MoeBlock_0.gate.kernel"), (Shape{7168, 58, 256}));
    EXPECT_EQ(MtShape(r, m + "DeepSeekMoeBlock_0.MoeBlock_0.gate.bias"), (Shape{256, 58}));
    EXPECT_EQ(MtShape(r, m + "DeepSeekMoeBlock_0.MoeBlock_0.wi_0"), (Shape{256, 58, 7168, 2048}));
    EXPECT_EQ(MtShape(r, m + "DeepSeekMoeBlock_0.shared_experts.wi_0.kernel"),
              (Shape{7168, 58, 2048}));
    EXPECT_EQ(MtShape(r, "decoder.dense_layers.mlp.wi_0.kernel"), (Shape{7168, 3, 18432}));
    // MoE layers read HF layers 3..60; the MTP layer 61 is declared skipped.
    const Rule* wq_a = FindRule(r, m + "self_attention.wq_a.kernel");
    ASSERT_NE(wq_a, nullptr);
    ASSERT_EQ(wq_a->stack.size(), 1u);
    EXPECT_EQ(wq_a->stack[0].hf_start, 3);
    EXPECT_EQ(wq_a->stack[0].count, 58);
    bool mtp_ignored = false;
    for (const IgnoreRule& i : r.ignores) mtp_ignored |= i.pattern == "model.layers.61.*";
    EXPECT_TRUE(mtp_ignored);
    EXPECT_EQ(FindRule(r, "decoder.moe_layers.self_attention.query.kernel"), nullptr);
    EXPECT_EQ(FindRule(r, "decoder.moe_layers.self_attention.indexer.wk.kernel"), nullptr);
  }
  {
    const RuleSet r = RulesOf(Preset("deepseek2-16b"), scanned);
    EXPECT_EQ(MtShape(r, "decoder.dense_layers.self_attention.query.kernel"),
              (Shape{2048, 1, 16, 192}));
    EXPECT_EQ(MtShape(r, "decoder.moe_layers.DeepSeekMoeBlock_0.shared_experts.wi_0.kernel"),
              (Shape{2048, 26, 2816}));
    EXPECT_EQ(FindRule(r, "decoder.moe_layers.DeepSeekMoeBlock_0.MoeBlock_0.gate.bias"), nullptr);
    EXPECT_EQ(FindRule(r, "decoder.moe_layers.self_attention.wq_a.kernel"), nullptr);
  }
  {
    const RuleSet r = RulesOf(Preset("deepseek3.2-671b"), scanned);
    const std::string m = "decoder.moe_layers.self_attention.indexer.";
    EXPECT_EQ(MtShape(r, m + "wq_b.kernel"), (Shape{1536, 58, 64, 128}));
    EXPECT_EQ(MtShape(r, m + "wk.kernel"), (Shape{7168, 58, 128}));
    EXPECT_EQ(MtShape(r, m + "weights_proj.kernel"), (Shape{7168, 58, 64}));
    EXPECT_EQ(MtShape(r, m + "k_norm.scale"), (Shape{128, 58}));
    EXPECT_EQ(MtShape(r, m + "k_norm.bias"), (Shape{128, 58}));
  }
  {
    // Unscanned with --mtp: moe_layers_57 is HF layer 60; layer 61 is the MTP block.
    const RuleSet r = RulesOf(Preset("deepseek3-671b"),
                              {{"direction", "to_maxtext"}, {"scan_layers", false}, {"mtp", true}});
    const Rule* last = FindRule(r, "decoder.moe_layers_57.self_attention.wq_a.kernel");
    ASSERT_NE(last, nullptr);
    EXPECT_EQ(last->hf_inputs[0].name, "model.layers.60.self_attn.q_a_proj.weight");
    EXPECT_EQ(FindRule(r, "decoder.moe_layers_58.self_attention.wq_a.kernel"), nullptr);
    const Rule* eh = FindRule(r, "mtp_block.mtp_layer_1.mtp_1_projection.kernel");
    ASSERT_NE(eh, nullptr);
    EXPECT_EQ(eh->hf_inputs[0].name, "model.layers.61.eh_proj.weight");
    EXPECT_EQ(eh->mt_outputs[0].dims, (Shape{14336, 7168}));
    EXPECT_EQ(MtShape(r,
                      "mtp_block.mtp_layer_1.mtp_1_transformer_layer.DeepSeekMoeBlock_0."
                      "MoeBlock_0.wo"),
              (Shape{256, 2048, 7168}));
  }
}

TEST(DeepSeekPresetTest, Fp8ReleaseReadsWeightsWithTheirScales) {
  json config = Preset("deepseek3-671b");
  config["quantization_config"] = {{"activation_scheme", "dynamic"},
                                   {"fmt", "e4m3"},
                                   {"quant_method", "fp8"},
                                   {"weight_block_size", {128, 128}}};
  const RuleSet to_mt = RulesOf(config, {{"direction", "to_maxtext"}, {"scan_layers", true}});
  const Rule* wkv_a = FindRule(to_mt, "decoder.moe_layers.self_attention.wkv_a.kernel");
  ASSERT_NE(wkv_a, nullptr);
  ASSERT_EQ(wkv_a->hf_inputs.size(), 2u);
  EXPECT_EQ(wkv_a->hf_inputs[1].name,
            "model.layers.{layer}.self_attn.kv_a_proj_with_mqa.weight_scale_inv");
  EXPECT_EQ(wkv_a->hf_inputs[1].dims, (Shape{5, 56}));  // 576 rows: a partial block
  EXPECT_EQ(wkv_a->ops.front().kind, OpKind::kCustom);
  EXPECT_TRUE(wkv_a->lossy());
  const Rule* experts = FindRule(to_mt, "decoder.moe_layers.DeepSeekMoeBlock_0.MoeBlock_0.wo");
  ASSERT_NE(experts, nullptr);
  EXPECT_EQ(experts->hf_inputs[1].name,
            "model.layers.{layer}.mlp.experts.{expert}.down_proj.weight_scale_inv");
  EXPECT_EQ(experts->hf_inputs[1].dims, (Shape{56, 16}));
  // Unquantized in the release: router, norms, embedding.
  for (const std::string name : {"decoder.moe_layers.DeepSeekMoeBlock_0.MoeBlock_0.gate.kernel",
                                 "decoder.moe_layers.self_attention.kv_norm.scale",
                                 "token_embedder.embedding", "decoder.logits_dense.kernel"}) {
    const Rule* r = FindRule(to_mt, name);
    ASSERT_NE(r, nullptr) << name;
    EXPECT_EQ(r->hf_inputs.size(), 1u) << name;
  }
  // Export: plain weights, invertible ops, no quantization_config.
  const RuleSet to_hf = RulesOf(config, {{"direction", "to_hf"}, {"scan_layers", true}});
  for (const Rule& r : to_hf.rules) {
    EXPECT_EQ(r.hf_inputs.size(), 1u) << r.mt_outputs[0].name;
    for (const OpSpec& op : r.ops) EXPECT_NE(op.kind, OpKind::kCustom) << r.mt_outputs[0].name;
  }
  auto adapter = MakeAdapter(config);
  ASSERT_NE(adapter, nullptr);
  Result<std::string> hf = adapter->TranslateConfig(CKB_TO_HF);
  ASSERT_TRUE(hf.ok());
  EXPECT_FALSE(json::parse(*hf).contains("quantization_config"));
}

// The MaxText settings are those of MaxText's configs/models/*.yml.
TEST(DeepSeekPresetTest, MaxTextSettingsMatchMaxTextsModelFiles) {
  auto settings = [&](const std::string& preset) {
    auto adapter = MakeAdapter(Preset(preset));
    Result<std::string> text = adapter->TranslateConfig(CKB_TO_MAXTEXT);
    EXPECT_TRUE(text.ok());
    return json::parse(*text);
  };
  // deepseek2-16b.yml
  const json v2 = {{"base_emb_dim", 2048},
                   {"base_num_query_heads", 16},
                   {"base_num_kv_heads", 16},
                   {"base_mlp_dim", 10944},
                   {"base_moe_mlp_dim", 1408},
                   {"base_num_decoder_layers", 27},
                   {"first_num_dense_layers", 1},
                   {"mlp_activations", {"silu", "linear"}},
                   {"vocab_size", 102400},
                   {"enable_dropout", false},
                   {"logits_via_embedding", false},
                   {"normalization_layer_epsilon", 1.0e-6},
                   {"num_experts", 64},
                   {"num_experts_per_tok", 6},
                   {"shared_experts", 2},
                   {"routed_scaling_factor", 1.0},
                   {"routed_score_func", "softmax"},
                   {"routed_bias", false},
                   {"decoder_block", "deepseek"},
                   {"attention_type", "mla"},
                   {"q_lora_rank", 0},
                   {"kv_lora_rank", 512},
                   {"qk_nope_head_dim", 128},
                   {"qk_rope_head_dim", 64},
                   {"v_head_dim", 128},
                   {"rope_type", "yarn"},
                   {"rope_max_timescale", 10000},
                   {"max_position_embeddings", 163840},
                   {"original_max_position_embeddings", 4096},
                   {"rope_factor", 40},
                   {"beta_fast", 32},
                   {"mscale", 0.707},
                   {"rope_interleave", true},
                   {"rope_truncate", true},
                   {"rope_attention_scaling", false}};
  // deepseek3-671b.yml, plus the routing groups its comment asks for.
  json v3 = v2;
  for (auto [k, val] : std::map<std::string, json>{{"base_emb_dim", 7168},
                                                   {"base_num_query_heads", 128},
                                                   {"base_num_kv_heads", 128},
                                                   {"base_mlp_dim", 18432},
                                                   {"base_moe_mlp_dim", 2048},
                                                   {"base_num_decoder_layers", 61},
                                                   {"first_num_dense_layers", 3},
                                                   {"vocab_size", 129280},
                                                   {"num_experts", 256},
                                                   {"num_experts_per_tok", 8},
                                                   {"shared_experts", 1},
                                                   {"routed_scaling_factor", 2.5},
                                                   {"routed_score_func", "sigmoid"},
                                                   {"routed_bias", true},
                                                   {"q_lora_rank", 1536},
                                                   {"mscale", 1.0},
                                                   {"n_routing_groups", 8},
                                                   {"topk_routing_group", 4}}) {
    v3[k] = val;
  }
  json v32 = v3;
  v32["use_indexer"] = true;
  v32["indexer_n_heads"] = 64;
  v32["indexer_head_dim"] = 128;
  v32["indexer_topk"] = 2048;
  for (const auto& [preset, want] : std::vector<std::pair<std::string, json>>{
           {"deepseek2-16b", v2}, {"deepseek3-671b", v3}, {"deepseek3.2-671b", v32}}) {
    const json got = settings(preset);
    for (const auto& [key, value] : want.items()) {
      ASSERT_TRUE(got.contains(key)) << preset << ": " << key;
      if (value.is_number()) {
        EXPECT_DOUBLE_EQ(got[key].get<double>(), value.get<double>()) << preset << ": " << key;
      } else {
        EXPECT_EQ(got[key], value) << preset << ": " << key;
      }
    }
  }
  EXPECT_FALSE(settings("deepseek2-16b").contains("n_routing_groups"));
}

TEST(DeepSeekConfigTest, UnconvertibleConfigsAreRefusedWithTheReason) {
  struct Bad {
    std::string what;
    json patch;
  };
  for (const Bad& bad : std::vector<Bad>{
           {"quant_method 'awq' is not converted",
            {{"quantization_config", {{"quant_method", "awq"}, {"bits", 4}}}}},
           {"no weight_block_size", {{"quantization_config", {{"quant_method", "fp8"}}}}},
           {"moe_layer_freq 2", {{"moe_layer_freq", 2}}},
           {"attention_bias is set", {{"attention_bias", true}}},
           {"first_k_dense_replace 9 is outside", {{"first_k_dense_replace", 9}}},
           {"missing integer 'kv_lora_rank'", {{"kv_lora_rank", nullptr}}},
       }) {
    json config = TinyV3();
    config.merge_patch(bad.patch);
    Result<std::unique_ptr<Adapter>> a = Adapter::Create(Plugin(), "deepseek_v3", config.dump());
    ASSERT_FALSE(a.ok()) << bad.what;
    EXPECT_NE(a.status().message().find(bad.what), std::string::npos) << a.status().message();
  }
}

TEST(DeepSeekConfigTest, TransformersFiveRopeParameters) {
  json config = TinyV3();
  config.erase("rope_scaling");
  config.erase("rope_theta");
  config["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 50000.0},
                               {"factor", 8.0},       {"original_max_position_embeddings", 2048},
                               {"beta_fast", 16.0},   {"beta_slow", 2.0},
                               {"mscale", 0.5}};
  auto adapter = MakeAdapter(config);
  ASSERT_NE(adapter, nullptr);
  Result<std::string> text = adapter->TranslateConfig(CKB_TO_MAXTEXT);
  ASSERT_TRUE(text.ok());
  const json m = json::parse(*text);
  EXPECT_EQ(m["rope_type"], "yarn");
  EXPECT_EQ(m["rope_max_timescale"], 50000.0);
  EXPECT_EQ(m["rope_factor"], 8.0);
  EXPECT_EQ(m["original_max_position_embeddings"], 2048);
  EXPECT_EQ(m["beta_fast"], 16.0);
  EXPECT_EQ(m["beta_slow"], 2.0);
  EXPECT_EQ(m["mscale"], 0.5);
}

TEST(DeepSeekConfigTest, UnknownTensorsAreNotSilentlyDropped) {
  const json config = TinyV2();
  TempDir tmp;
  Source src = BuildBf16(tmp / "src", config, /*seed=*/2);
  src.tensors.push_back(
      {{"model.layers.1.mlp.extra.weight", DType::kBF16, {2}}, std::string(4, '\0')});
  ASSERT_TRUE(safetensors::WriteCheckpoint(tmp / "src2", src.tensors).ok());
  ASSERT_TRUE(WriteFile(tmp / "src2" / "config.json", config.dump()).ok());
  CliRun run = RunCli(ConvertArgs("maxtext", true, "", false, tmp / "src2", tmp / "mt"));
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_NE(run.err.find("model.layers.1.mlp.extra.weight"), std::string::npos) << run.err;
}

}  // namespace
}  // namespace ckptbridge
