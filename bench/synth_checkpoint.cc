// bench/synth_checkpoint - writes a synthetic Hugging Face checkpoint of a
// given size, shaped like a real model family, for throughput and memory
// measurements.
//
//   synth_checkpoint --family llama --size 1GiB --out /tmp/llama-1g
//
// Families and what they exercise:
//   llama     dense Llama 3 (RoPE permutation, query scaling, GQA)
//   mixtral   Mixtral MoE: per-expert tensors stacked [experts, layers, ...]
//   qwen3moe  Qwen3-MoE: q/k norms, 16 small experts per layer
//   deepseek  DeepSeek-V3: MLA attention, one dense layer then MoE layers with
//             a shared expert and a router with e_score_correction_bias;
//             FP8 E4M3 weights with f32 weight_scale_inv per 128x128 block and
//             the release's quantization_config (--no-fp8: all bf16)
//   gptoss    GPT-OSS: attention biases and sinks, router with bias, experts
//             as the release stores them: MXFP4 `*_blocks` (U8, two E2M1 a
//             byte) and `*_scales` (U8 E8M0 exponents, one per 32 values)
//             (--no-mxfp4: the bf16 release's gate_up_proj / down_proj)
//
// Widths are fixed per family (hidden 2048 for --size >= 256 MiB, 512 below),
// so checkpoints of different sizes differ only in their layer count, and the
// layer count is chosen so the tensor bytes (as stored: FP8 and MXFP4 count
// their packed bytes) add up to about --size. Vocabularies are 32000 for every
// family, so the embeddings do not dominate small sizes. DeepSeek's
// multi-token-prediction layer is left out (the converters skip it by
// default, so it would be read by `cp` and not by a conversion).
//
// Values are pseudo-random (xorshift, fixed seed) but valid: bf16 weights
// uniform in +-0.05, norm weights near 1, FP8 codes of every finite value with
// block scales near 1e-3, E2M1 codes of every value with E8M0 exponents near
// 2^-7. zstd sees realistic entropy and dequantized weights stay small.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "host/base/file.h"
#include "host/base/numeric.h"
#include "host/cli/format.h"
#include "host/formats/safetensors/writer.h"

namespace {

using namespace ckptbridge;
using nlohmann::json;

// How a tensor's bytes are drawn.
enum class Fill {
  kWeight,     // bf16, uniform in +-0.05 (as initialized weights)
  kNorm,       // bf16, 1 +- 0.05 (RMSNorm scales)
  kF32Small,   // f32, uniform in +-0.05 (DeepSeek's router bias)
  kE4m3,       // F8_E4M3 codes, every finite one (0x7f and 0xff, NaN, excluded)
  kE4m3Scale,  // f32 block scales, 2^-10 .. 2^-9 (about 1e-3)
  kE2m1,       // U8, two random E2M1 codes a byte
  kE8m0,       // U8 exponents 118 .. 122: scales 2^-9 .. 2^-5
};

struct Tensor {
  safetensors::TensorSpec spec;
  Fill fill;
};

struct Model {
  json config;
  std::vector<Tensor> tensors;

  void Add(std::string name, DType dtype, Shape shape, Fill fill) {
    tensors.push_back({{std::move(name), dtype, std::move(shape)}, fill});
  }
  void Bf16(std::string name, Shape shape, Fill fill = Fill::kWeight) {
    Add(std::move(name), DType::kBF16, std::move(shape), fill);
  }
  uint64_t Bytes() const {
    uint64_t total = 0;
    for (const Tensor& t : tensors) {
      total += static_cast<uint64_t>(NumElementsUnchecked(t.spec.shape)) * DTypeSize(t.spec.dtype);
    }
    return total;
  }
};

struct Options {
  std::string family = "llama";
  bool quantized = true;  // --no-fp8 / --no-mxfp4 clear it
};

std::string L(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

// The parts every family shares: embedding, final norm, untied output layer.
void AddEmbeddings(Model& m, int64_t vocab, int64_t hidden) {
  m.Bf16("model.embed_tokens.weight", {vocab, hidden});
  m.Bf16("model.norm.weight", {hidden}, Fill::kNorm);
  m.Bf16("lm_head.weight", {vocab, hidden});
}

void AddMlp(Model& m, const std::string& p, int64_t hidden, int64_t mlp) {
  m.Bf16(p + "gate_proj.weight", {mlp, hidden});
  m.Bf16(p + "up_proj.weight", {mlp, hidden});
  m.Bf16(p + "down_proj.weight", {hidden, mlp});
}

// Llama 3 (dense) and Mixtral (8 experts, expert width = hidden).
Model LlamaLike(bool moe, int64_t hidden, int64_t layers) {
  const int64_t head_dim = 64, heads = hidden / head_dim,
                kv_heads = std::max<int64_t>(1, heads / 4), vocab = 32000;
  const int64_t experts = moe ? 8 : 0, mlp = moe ? hidden : hidden * 11 / 4;
  Model m;
  m.config = {{"architectures", {moe ? "MixtralForCausalLM" : "LlamaForCausalLM"}},
              {"model_type", moe ? "mixtral" : "llama"},
              {"vocab_size", vocab},
              {"hidden_size", hidden},
              {"intermediate_size", mlp},
              {"num_hidden_layers", layers},
              {"num_attention_heads", heads},
              {"num_key_value_heads", kv_heads},
              {"head_dim", head_dim},
              {"hidden_act", "silu"},
              {"rms_norm_eps", 1e-5},
              {"rope_theta", 500000.0},
              {"tie_word_embeddings", false},
              {"torch_dtype", "bfloat16"}};
  if (moe) {
    m.config["num_local_experts"] = experts;
    m.config["num_experts_per_tok"] = 2;
  } else {
    m.config["rope_scaling"] = {{"rope_type", "llama3"},
                                {"factor", 8.0},
                                {"low_freq_factor", 1.0},
                                {"high_freq_factor", 4.0},
                                {"original_max_position_embeddings", 8192}};
  }
  AddEmbeddings(m, vocab, hidden);
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = L(l);
    m.Bf16(p + "input_layernorm.weight", {hidden}, Fill::kNorm);
    m.Bf16(p + "post_attention_layernorm.weight", {hidden}, Fill::kNorm);
    m.Bf16(p + "self_attn.q_proj.weight", {heads * head_dim, hidden});
    m.Bf16(p + "self_attn.k_proj.weight", {kv_heads * head_dim, hidden});
    m.Bf16(p + "self_attn.v_proj.weight", {kv_heads * head_dim, hidden});
    m.Bf16(p + "self_attn.o_proj.weight", {hidden, heads * head_dim});
    if (!moe) {
      AddMlp(m, p + "mlp.", hidden, mlp);
      continue;
    }
    m.Bf16(p + "block_sparse_moe.gate.weight", {experts, hidden});
    for (int64_t e = 0; e < experts; ++e) {
      const std::string q = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      m.Bf16(q + "w1.weight", {mlp, hidden});
      m.Bf16(q + "w2.weight", {hidden, mlp});
      m.Bf16(q + "w3.weight", {mlp, hidden});
    }
  }
  return m;
}

// Qwen3-MoE (Qwen3-30B-A3B's attention at hidden 2048: 32 query heads of 128,
// 4 KV heads; 16 experts of width 768 instead of 128).
Model Qwen3Moe(int64_t hidden, int64_t layers) {
  const int64_t head_dim = hidden >= 2048 ? 128 : 64, heads = hidden / 64, kv_heads = 4,
                vocab = 32000, experts = 16, moe_mlp = hidden * 3 / 8;
  Model m;
  m.config = {{"architectures", {"Qwen3MoeForCausalLM"}},
              {"model_type", "qwen3_moe"},
              {"vocab_size", vocab},
              {"hidden_size", hidden},
              {"intermediate_size", hidden * 3},
              {"moe_intermediate_size", moe_mlp},
              {"num_hidden_layers", layers},
              {"num_attention_heads", heads},
              {"num_key_value_heads", kv_heads},
              {"head_dim", head_dim},
              {"num_experts", experts},
              {"num_experts_per_tok", 4},
              {"norm_topk_prob", true},
              {"decoder_sparse_step", 1},
              {"mlp_only_layers", json::array()},
              {"attention_bias", false},
              {"hidden_act", "silu"},
              {"max_position_embeddings", 40960},
              {"rms_norm_eps", 1e-6},
              {"rope_theta", 1000000.0},
              {"tie_word_embeddings", false},
              {"torch_dtype", "bfloat16"}};
  AddEmbeddings(m, vocab, hidden);
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = L(l);
    m.Bf16(p + "input_layernorm.weight", {hidden}, Fill::kNorm);
    m.Bf16(p + "post_attention_layernorm.weight", {hidden}, Fill::kNorm);
    m.Bf16(p + "self_attn.q_proj.weight", {heads * head_dim, hidden});
    m.Bf16(p + "self_attn.k_proj.weight", {kv_heads * head_dim, hidden});
    m.Bf16(p + "self_attn.v_proj.weight", {kv_heads * head_dim, hidden});
    m.Bf16(p + "self_attn.o_proj.weight", {hidden, heads * head_dim});
    m.Bf16(p + "self_attn.q_norm.weight", {head_dim}, Fill::kNorm);
    m.Bf16(p + "self_attn.k_norm.weight", {head_dim}, Fill::kNorm);
    m.Bf16(p + "mlp.gate.weight", {experts, hidden});
    for (int64_t e = 0; e < experts; ++e) {
      AddMlp(m, p + "mlp.experts." + std::to_string(e) + ".", hidden, moe_mlp);
    }
  }
  return m;
}

// DeepSeek-V3 (MLA with query compression; V3's 61 layers, 256 experts and
// hidden 7168 scaled to hidden 2048, 16 heads, 16 experts of width 512 plus
// one shared expert, first layer dense).
Model DeepSeek(bool fp8, int64_t hidden, int64_t layers) {
  const int64_t s = hidden / 2048 > 0 ? 1 : 4;  // width divisor for the small class
  const int64_t heads = 16 / s, q_lora = hidden * 3 / 8, kv_lora = hidden / 4, nope = 128 / s,
                rope = 64 / s, v = 128 / s, mlp = hidden * 11 / 4, moe_mlp = hidden / 4,
                experts = 16, first_dense = 1, vocab = 32000;
  Model m;
  m.config = {{"architectures", {"DeepseekV3ForCausalLM"}},
              {"model_type", "deepseek_v3"},
              {"attention_bias", false},
              {"first_k_dense_replace", first_dense},
              {"hidden_act", "silu"},
              {"hidden_size", hidden},
              {"intermediate_size", mlp},
              {"kv_lora_rank", kv_lora},
              {"max_position_embeddings", 163840},
              {"moe_intermediate_size", moe_mlp},
              {"moe_layer_freq", 1},
              {"n_group", 4},
              {"n_routed_experts", experts},
              {"n_shared_experts", 1},
              {"norm_topk_prob", true},
              {"num_attention_heads", heads},
              {"num_experts_per_tok", 4},
              {"num_hidden_layers", layers},
              {"num_key_value_heads", heads},
              {"num_nextn_predict_layers", 0},
              {"q_lora_rank", q_lora},
              {"qk_nope_head_dim", nope},
              {"qk_rope_head_dim", rope},
              {"rms_norm_eps", 1e-6},
              {"rope_scaling",
               {{"beta_fast", 32.0},
                {"beta_slow", 1.0},
                {"factor", 40.0},
                {"mscale", 1.0},
                {"mscale_all_dim", 1.0},
                {"original_max_position_embeddings", 4096},
                {"type", "yarn"}}},
              {"rope_theta", 10000},
              {"routed_scaling_factor", 2.5},
              {"scoring_func", "sigmoid"},
              {"tie_word_embeddings", false},
              {"topk_group", 2},
              {"topk_method", "noaux_tc"},
              {"torch_dtype", "bfloat16"},
              {"v_head_dim", v},
              {"vocab_size", vocab}};
  if (fp8) {
    // As the V3 release's config.json has it.
    m.config["quantization_config"] = {{"activation_scheme", "dynamic"},
                                       {"fmt", "e4m3"},
                                       {"quant_method", "fp8"},
                                       {"weight_block_size", {128, 128}}};
  }
  // A weight DeepSeek quantizes: E4M3 codes plus f32 [ceil(out/128), ceil(in/128)].
  auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    if (!fp8) return m.Bf16(name, {out, in});
    m.Add(name, DType::kF8E4M3, {out, in}, Fill::kE4m3);
    m.Add(name + "_scale_inv", DType::kF32, {(out + 127) / 128, (in + 127) / 128},
          Fill::kE4m3Scale);
  };
  AddEmbeddings(m, vocab, hidden);
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = L(l);
    m.Bf16(p + "input_layernorm.weight", {hidden}, Fill::kNorm);
    m.Bf16(p + "post_attention_layernorm.weight", {hidden}, Fill::kNorm);
    linear(p + "self_attn.q_a_proj.weight", q_lora, hidden);
    m.Bf16(p + "self_attn.q_a_layernorm.weight", {q_lora}, Fill::kNorm);
    linear(p + "self_attn.q_b_proj.weight", heads * (nope + rope), q_lora);
    linear(p + "self_attn.kv_a_proj_with_mqa.weight", kv_lora + rope, hidden);
    m.Bf16(p + "self_attn.kv_a_layernorm.weight", {kv_lora}, Fill::kNorm);
    linear(p + "self_attn.kv_b_proj.weight", heads * (nope + v), kv_lora);
    linear(p + "self_attn.o_proj.weight", hidden, heads * v);
    if (l < first_dense) {
      linear(p + "mlp.gate_proj.weight", mlp, hidden);
      linear(p + "mlp.up_proj.weight", mlp, hidden);
      linear(p + "mlp.down_proj.weight", hidden, mlp);
      continue;
    }
    // The router stays bf16, its bias f32, in the FP8 release.
    m.Bf16(p + "mlp.gate.weight", {experts, hidden});
    m.Add(p + "mlp.gate.e_score_correction_bias", DType::kF32, {experts}, Fill::kF32Small);
    linear(p + "mlp.shared_experts.gate_proj.weight", moe_mlp, hidden);
    linear(p + "mlp.shared_experts.up_proj.weight", moe_mlp, hidden);
    linear(p + "mlp.shared_experts.down_proj.weight", hidden, moe_mlp);
    for (int64_t e = 0; e < experts; ++e) {
      const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
      linear(q + "gate_proj.weight", moe_mlp, hidden);
      linear(q + "up_proj.weight", moe_mlp, hidden);
      linear(q + "down_proj.weight", hidden, moe_mlp);
    }
  }
  return m;
}

// GPT-OSS (gpt-oss-20b's head layout, 64-wide heads with 8 KV heads; hidden
// and expert width 2048 instead of 2880, 16 experts instead of 32). The layer
// count is even: MaxText scans GPT-OSS in pairs of layers.
Model GptOss(bool mxfp4, int64_t hidden, int64_t layers) {
  const int64_t head_dim = 64, heads = hidden / head_dim,
                kv_heads = std::max<int64_t>(1, heads / 4), mlp = hidden, experts = 16,
                vocab = 32000;
  json layer_types = json::array();
  for (int64_t i = 0; i < layers; ++i) {
    layer_types.push_back(i % 2 == 0 ? "sliding_attention" : "full_attention");
  }
  Model m;
  m.config = {{"architectures", {"GptOssForCausalLM"}},
              {"model_type", "gpt_oss"},
              {"attention_bias", true},
              {"experts_per_token", 4},
              {"head_dim", head_dim},
              {"hidden_act", "silu"},
              {"hidden_size", hidden},
              {"initial_context_length", 4096},
              {"intermediate_size", mlp},
              {"layer_types", layer_types},
              {"max_position_embeddings", 131072},
              {"num_attention_heads", heads},
              {"num_experts_per_tok", 4},
              {"num_hidden_layers", layers},
              {"num_key_value_heads", kv_heads},
              {"num_local_experts", experts},
              {"rms_norm_eps", 1e-5},
              {"rope_scaling",
               {{"beta_fast", 32.0},
                {"beta_slow", 1.0},
                {"factor", 32.0},
                {"original_max_position_embeddings", 4096},
                {"rope_type", "yarn"},
                {"truncate", false}}},
              {"rope_theta", 150000},
              {"sliding_window", 128},
              {"swiglu_limit", 7.0},
              {"tie_word_embeddings", false},
              {"vocab_size", vocab}};
  if (mxfp4) {
    // As the MXFP4 release writes it (and, like it, no torch_dtype).
    m.config["quantization_config"] = {{"modules_to_not_convert",
                                        {"model.layers.*.self_attn", "model.layers.*.mlp.router",
                                         "model.embed_tokens", "lm_head"}},
                                       {"quant_method", "mxfp4"}};
  } else {
    m.config["torch_dtype"] = "bfloat16";
  }
  AddEmbeddings(m, vocab, hidden);
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = L(l);
    m.Bf16(p + "input_layernorm.weight", {hidden}, Fill::kNorm);
    m.Bf16(p + "post_attention_layernorm.weight", {hidden}, Fill::kNorm);
    m.Bf16(p + "self_attn.q_proj.weight", {heads * head_dim, hidden});
    m.Bf16(p + "self_attn.q_proj.bias", {heads * head_dim});
    m.Bf16(p + "self_attn.k_proj.weight", {kv_heads * head_dim, hidden});
    m.Bf16(p + "self_attn.k_proj.bias", {kv_heads * head_dim});
    m.Bf16(p + "self_attn.v_proj.weight", {kv_heads * head_dim, hidden});
    m.Bf16(p + "self_attn.v_proj.bias", {kv_heads * head_dim});
    m.Bf16(p + "self_attn.o_proj.weight", {hidden, heads * head_dim});
    m.Bf16(p + "self_attn.o_proj.bias", {hidden});
    m.Bf16(p + "self_attn.sinks", {heads});
    m.Bf16(p + "mlp.router.weight", {experts, hidden});
    m.Bf16(p + "mlp.router.bias", {experts});
    m.Bf16(p + "mlp.experts.gate_up_proj_bias", {experts, 2 * mlp});
    m.Bf16(p + "mlp.experts.down_proj_bias", {experts, hidden});
    if (!mxfp4) {
      m.Bf16(p + "mlp.experts.gate_up_proj", {experts, hidden, 2 * mlp});
      m.Bf16(p + "mlp.experts.down_proj", {experts, mlp, hidden});
      continue;
    }
    // [X, out, in/32, 16] blocks and [X, out, in/32] scales.
    const std::string x = p + "mlp.experts.";
    m.Add(x + "gate_up_proj_blocks", DType::kU8, {experts, 2 * mlp, hidden / 32, 16}, Fill::kE2m1);
    m.Add(x + "gate_up_proj_scales", DType::kU8, {experts, 2 * mlp, hidden / 32}, Fill::kE8m0);
    m.Add(x + "down_proj_blocks", DType::kU8, {experts, hidden, mlp / 32, 16}, Fill::kE2m1);
    m.Add(x + "down_proj_scales", DType::kU8, {experts, hidden, mlp / 32}, Fill::kE8m0);
  }
  return m;
}

Model Build(const Options& o, int64_t hidden, int64_t layers) {
  if (o.family == "llama") return LlamaLike(false, hidden, layers);
  if (o.family == "mixtral") return LlamaLike(true, hidden, layers);
  if (o.family == "qwen3moe") return Qwen3Moe(hidden, layers);
  if (o.family == "deepseek") return DeepSeek(o.quantized, hidden, layers);
  return GptOss(o.quantized, hidden, layers);
}

// The layer count whose tensors add up closest to `bytes`: the size is
// affine in the layer count past the first few (DeepSeek's dense layer), and
// GPT-OSS needs pairs.
int64_t ChooseLayers(const Options& o, int64_t hidden, uint64_t bytes) {
  const int64_t first = o.family == "gptoss" || o.family == "deepseek" ? 2 : 1;
  const int64_t step = o.family == "gptoss" ? 2 : 1;
  const double base = static_cast<double>(Build(o, hidden, first).Bytes());
  const double per_step = static_cast<double>(Build(o, hidden, first + step).Bytes()) - base;
  const double steps = std::round((static_cast<double>(bytes) - base) / per_step);
  return first + step * static_cast<int64_t>(std::max(0.0, steps));
}

struct Rng {
  uint64_t state;
  uint64_t Next() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  }
  // Uniform in [-1, 1).
  float Symmetric() { return static_cast<float>(Next() >> 40) / 8388608.0f - 1.0f; }
};

std::string Draw(const Tensor& t, Rng& rng) {
  const auto n = static_cast<size_t>(NumElementsUnchecked(t.spec.shape));
  std::string bytes(n * DTypeSize(t.spec.dtype), '\0');
  char* out = bytes.data();
  switch (t.fill) {
    case Fill::kWeight:
    case Fill::kNorm: {
      const float offset = t.fill == Fill::kNorm ? 1.0f : 0.0f;
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = F32ToBf16(offset + rng.Symmetric() * 0.05f);
        std::memcpy(out + i * 2, &h, 2);
      }
      break;
    }
    case Fill::kF32Small:
      for (size_t i = 0; i < n; ++i) {
        const float f = rng.Symmetric() * 0.05f;
        std::memcpy(out + i * 4, &f, 4);
      }
      break;
    case Fill::kE4m3:
      for (size_t i = 0; i < n; ++i) {
        auto code = static_cast<uint8_t>(rng.Next() >> 56);
        if ((code & 0x7f) == 0x7f) code ^= 1;  // NaN -> +-448
        out[i] = static_cast<char>(code);
      }
      break;
    case Fill::kE4m3Scale:
      for (size_t i = 0; i < n; ++i) {
        const float f = std::ldexp(1.5f + 0.5f * rng.Symmetric(), -10);
        std::memcpy(out + i * 4, &f, 4);
      }
      break;
    case Fill::kE2m1:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>(rng.Next() >> 56);
      break;
    case Fill::kE8m0:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>(118 + (rng.Next() >> 32) % 5);
      break;
  }
  return bytes;
}

int Usage(const std::string& message) {
  std::cerr << "synth_checkpoint: " << message
            << "\nusage: synth_checkpoint --family llama|mixtral|qwen3moe|deepseek|gptoss "
               "--size SIZE --out DIR [--no-fp8] [--no-mxfp4]\n"
               "  --no-fp8    deepseek: bf16 weights, no quantization_config\n"
               "  --no-mxfp4  gptoss: the bf16 release's expert layout\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string size_text, out;
  bool no_fp8 = false, no_mxfp4 = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--no-fp8") {
      no_fp8 = true;
      continue;
    }
    if (arg == "--no-mxfp4") {
      no_mxfp4 = true;
      continue;
    }
    if (arg != "--family" && arg != "--size" && arg != "--out") {
      return Usage("unknown option " + arg);
    }
    if (i + 1 >= argc) return Usage("missing value for " + arg);
    (arg == "--family" ? o.family : arg == "--size" ? size_text : out) = argv[++i];
  }
  if (size_text.empty() || out.empty()) return Usage("--size and --out are required");
  if (o.family != "llama" && o.family != "mixtral" && o.family != "qwen3moe" &&
      o.family != "deepseek" && o.family != "gptoss") {
    return Usage("--family must be llama, mixtral, qwen3moe, deepseek or gptoss, got '" + o.family +
                 "'");
  }
  if (no_fp8 && o.family != "deepseek") return Usage("--no-fp8 applies to --family deepseek");
  if (no_mxfp4 && o.family != "gptoss") return Usage("--no-mxfp4 applies to --family gptoss");
  o.quantized = !no_fp8 && !no_mxfp4;
  Result<uint64_t> size = cli::ParseSize(size_text, "--size");
  if (!size.ok()) return Usage(size.status().message());

  const int64_t hidden = *size >= (uint64_t{256} << 20) ? 2048 : 512;
  const int64_t layers = ChooseLayers(o, hidden, *size);
  const Model m = Build(o, hidden, layers);

  std::vector<safetensors::TensorSpec> specs;
  specs.reserve(m.tensors.size());
  for (const Tensor& t : m.tensors) specs.push_back(t.spec);
  std::map<std::string, const Tensor*> by_name;
  for (const Tensor& t : m.tensors) by_name[t.spec.name] = &t;

  const std::filesystem::path dir = out;
  if (Status st = CreateDirectories(dir); !st.ok()) return Usage(st.message());
  Result<safetensors::ShardPlan> plan = safetensors::PlanShards(specs, uint64_t{1} << 30);
  if (!plan.ok()) return Usage(plan.status().message());
  Rng rng{0x9e3779b97f4a7c15ull};
  for (const safetensors::PlannedShard& shard : plan->shards) {
    auto writer = safetensors::ShardWriter::Create(dir, shard);
    if (!writer.ok()) return Usage(writer.status().message());
    for (size_t i = 0; i < shard.tensors.size(); ++i) {
      const std::string bytes = Draw(*by_name.at(shard.tensors[i].spec.name), rng);
      if (Status st = (*writer)->WriteTensor(i, bytes.data(), bytes.size()); !st.ok()) {
        return Usage(st.message());
      }
    }
    if (Status st = (*writer)->Finish(); !st.ok()) return Usage(st.message());
  }
  if (plan->shards.size() > 1) {
    if (Status st = safetensors::WriteIndex(dir, *plan); !st.ok()) return Usage(st.message());
  }
  if (Status st = WriteFile(dir / "config.json", m.config.dump(2) + "\n"); !st.ok()) {
    return Usage(st.message());
  }
  std::cout << "wrote " << dir.string() << ": " << o.family
            << (o.family == "deepseek" ? (o.quantized ? " (fp8)" : " (bf16)") : "")
            << (o.family == "gptoss" ? (o.quantized ? " (mxfp4)" : " (bf16)") : "") << ", "
            << layers << " layers, hidden " << hidden << ", " << specs.size() << " tensors, "
            << cli::HumanBytes(plan->total_tensor_bytes) << " in " << plan->shards.size()
            << " shard(s)\n";
  return 0;
}
