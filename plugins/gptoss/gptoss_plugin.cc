// plugins/gptoss - GPT-OSS (20B, 120B), HF <-> MaxText, read from the
// bfloat16 release or straight from the MXFP4 one.
//
// The mapping is MaxText's own (checkpoint_conversion/utils/param_mapping.py
// GPT_OSS_*, hf_shape.py, shared/docs/maxtext-mapping.md §6.8), with every
// dimension read from config.json:
//
//   HF (model.layers.i.)                 MaxText (per layer; scanned: layer axis 1)
//   input_layernorm.weight [E]           pre_self_attention_layer_norm.scale [E]
//   post_attention_layernorm.weight [E]  post_self_attention_layer_norm.scale [E]
//   self_attn.q_proj.weight [Nq*D, E]    GptOssAttention.query.kernel [E, Nq, D]  (no scaling)
//   self_attn.q_proj.bias [Nq*D]         GptOssAttention.query.bias [Nq, D]
//   self_attn.k/v_proj.weight [Nkv*D, E] GptOssAttention.key/value.kernel [E, Nkv, D]
//   self_attn.k/v_proj.bias [Nkv*D]      GptOssAttention.key/value.bias [Nkv, D]
//   self_attn.o_proj.weight [E, Nq*D]    GptOssAttention.out.kernel [Nq, D, E]
//   self_attn.o_proj.bias [E]            GptOssAttention.out.bias [E]
//   self_attn.sinks [Nq]                 GptOssAttention.sinks [Nq]
//   mlp.router.weight [X, E]             GptOssMlp.gate.kernel [E, X]
//   mlp.router.bias [X]                  GptOssMlp.gate.bias [X]
//   mlp.experts.gate_up_proj [X, E, 2F]  GptOssMlp.wi_0 / wi_1 [X, E, F]  (gate = even columns,
//   mlp.experts.gate_up_proj_bias [X,2F] GptOssMlp.wi_0_bias / wi_1_bias [X, F]   up = odd ones)
//   mlp.experts.down_proj [X, F, E]      GptOssMlp.wo [X, F, E]
//   mlp.experts.down_proj_bias [X, E]    GptOssMlp.wo_bias [X, E]
//
// Layers: unscanned `decoder.layers_{i}`; scanned, MaxText scans blocks of
// two layers (sliding, full attention), `decoder.layers.layers_{b}` holding
// HF layers b, b+2, b+4, ... stacked on axis 1 - including the expert
// tensors, whose expert axis stays 0: wi_0 is [X, L/2, E, F]. The expert
// weights are converted one expert at a time (ABI 1.2 leading-axis
// stacking), so the memory a conversion needs follows one expert.
//
// MXFP4 (openai/gpt-oss-*, quantization_config.quant_method "mxfp4"): the
// expert weights are `<name>_blocks` U8 [X, out, in/32, 16] (two E2M1 values a
// byte, low nibble first) and `<name>_scales` U8 [X, out, in/32] (E8M0
// exponents, one per 32 values). MaxText needs a separate pre-pass writing a
// bfloat16 copy (standalone_scripts/dequantize_mxfp4.py); here a custom
// transform dequantizes each layer's tensor inside the conversion into
// [X, out, in], and host ops transpose it to the [X, in, out] the bfloat16
// release stores - exactly what that pre-pass and transformers'
// convert_moe_packed_tensors do - before the usual mapping. Custom ops have
// no inverse, so export always writes the bfloat16 layout (gate_up_proj,
// down_proj) and a config.json without quantization_config.
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ckptbridge/sdk/plugin.hpp"

namespace {

namespace sdk = ckptbridge::sdk;
using nlohmann::json;
using sdk::Axis;

// The plugin's one custom transform: MXFP4 blocks + E8M0 scales -> f32.
constexpr int32_t kDequantMxfp4 = 1;
// An MXFP4 block: 32 E2M1 values sharing one E8M0 scale, packed in 16 bytes.
constexpr int64_t kMxfp4BlockValues = 32;
constexpr int64_t kMxfp4BlockBytes = 16;
// MaxText's gpt_oss decoder alternates sliding-window and full attention and
// scans the pair as one block (inhomogeneous_layer_cycle_interval: 2).
constexpr int64_t kLayerCycle = 2;

// E2M1 code -> value (OCP MX v1.0 §5.3.3; transformers' FP4_VALUES). Code 8
// is -0: the sign bit is kept, as in that table.
constexpr float kE2m1Values[16] = {+0.0f, +0.5f, +1.0f, +1.5f, +2.0f, +3.0f, +4.0f, +6.0f,
                                   -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// The E8M0 code the OCP MX spec (v1.0, §5.4.1) defines as NaN.
constexpr uint8_t kE8m0Nan = 255;

// 2^(e - 127) in f32 for e < 255, as MaxText's dequantize_mxfp4.py computes
// it (`2.0 ** (scales - 127)` on a float32 tensor) and transformers' ldexp
// does: e = 0 is the subnormal 2^-127. e = 255 is NaN by the spec; those
// scripts compute +inf from it (a block of +-inf with NaN for its zeros),
// which no quantizer writes, so DequantizeMxfp4 refuses it instead.
float E8m0Scale(uint8_t e) { return std::ldexp(1.0f, static_cast<int>(e) - 127); }

std::string DimsString(const sdk::Dims& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

const char* DTypeName(int32_t dtype) {
  switch (dtype) {
    case CKB_DTYPE_U8:
      return "U8";
    case CKB_DTYPE_I8:
      return "I8";
    case CKB_DTYPE_F8_E8M0:
      return "F8_E8M0";
    case CKB_DTYPE_BF16:
      return "BF16";
    case CKB_DTYPE_F16:
      return "F16";
    case CKB_DTYPE_F32:
      return "F32";
    default:
      return "another dtype";
  }
}

// out[..., g*32 + 2j] = E2M1(low nibble of blocks[..., g, j]) * 2^(scales[..., g] - 127),
// out[..., g*32 + 2j + 1] the same with the high nibble.
void DequantizeMxfp4(const std::vector<sdk::TensorView>& inputs,
                     const std::vector<sdk::TensorView>& outputs) {
  const std::string what = "mxfp4 dequantization";
  if (inputs.size() != 2 || outputs.size() != 1) {
    sdk::Fail(CKB_INVALID_ARGUMENT,
              what + ": expected 2 inputs (blocks, scales) and 1 output, got " +
                  std::to_string(inputs.size()) + " and " + std::to_string(outputs.size()));
  }
  const sdk::TensorView& blocks = inputs[0];
  const sdk::TensorView& scales = inputs[1];
  const sdk::TensorView& out = outputs[0];
  if (blocks.dtype != CKB_DTYPE_U8) {
    sdk::Fail(CKB_INVALID_ARGUMENT, what + ": blocks are " + DTypeName(blocks.dtype) +
                                        ", expected U8 (two E2M1 values a byte)");
  }
  // Some re-savers label the exponents with safetensors' own E8M0 dtype.
  if (scales.dtype != CKB_DTYPE_U8 && scales.dtype != CKB_DTYPE_F8_E8M0) {
    sdk::Fail(CKB_INVALID_ARGUMENT, what + ": scales are " + DTypeName(scales.dtype) +
                                        ", expected U8 or F8_E8M0 (E8M0 exponents)");
  }
  if (blocks.dims.size() < 2 || blocks.dims.back() != kMxfp4BlockBytes) {
    sdk::Fail(CKB_INVALID_ARGUMENT, what + ": blocks have shape " + DimsString(blocks.dims) +
                                        ", expected [..., groups, 16]");
  }
  const sdk::Dims group_dims(blocks.dims.begin(), blocks.dims.end() - 1);
  if (scales.dims != group_dims) {
    sdk::Fail(CKB_INVALID_ARGUMENT, what + ": scales have shape " + DimsString(scales.dims) +
                                        " but blocks " + DimsString(blocks.dims) + " need " +
                                        DimsString(group_dims));
  }
  sdk::Dims want(blocks.dims.begin(), blocks.dims.end() - 2);
  want.push_back(blocks.dims[blocks.dims.size() - 2] * kMxfp4BlockValues);
  if (out.dims != want || out.dtype != CKB_DTYPE_F32) {
    sdk::Fail(CKB_INVALID_ARGUMENT, what + ": output is " + DTypeName(out.dtype) + " " +
                                        DimsString(out.dims) + " but blocks " +
                                        DimsString(blocks.dims) + " dequantize to F32 " +
                                        DimsString(want));
  }
  const auto* b = static_cast<const uint8_t*>(blocks.data);
  const auto* s = static_cast<const uint8_t*>(scales.data);
  auto* o = static_cast<float*>(out.data);
  const int64_t groups = scales.num_elements();
  for (int64_t g = 0; g < groups; ++g) {
    if (s[g] == kE8m0Nan) {
      // The block's place in the scales tensor, e.g. [expert, row, block].
      sdk::Dims at(scales.dims.size());
      for (size_t d = at.size(), rest = static_cast<size_t>(g); d-- > 0;) {
        at[d] = static_cast<int64_t>(rest % static_cast<size_t>(scales.dims[d]));
        rest /= static_cast<size_t>(scales.dims[d]);
      }
      sdk::Fail(CKB_INVALID_ARGUMENT,
                what + ": the scale of block " + DimsString(at) +
                    " is 255 (0xff), which E8M0 defines as NaN (OCP MX v1.0); none of its " +
                    std::to_string(kMxfp4BlockValues) + " values can be dequantized");
    }
    const float scale = E8m0Scale(s[g]);
    const uint8_t* in = b + g * kMxfp4BlockBytes;
    float* dst = o + g * kMxfp4BlockValues;
    for (int64_t j = 0; j < kMxfp4BlockBytes; ++j) {
      dst[2 * j] = kE2m1Values[in[j] & 0x0f] * scale;
      dst[2 * j + 1] = kE2m1Values[in[j] >> 4] * scale;
    }
  }
}

// Whether the checkpoint stores its experts as MXFP4; any other quantization
// is refused with the reason and the way out.
bool ReadMxfp4(const sdk::Config& config) {
  if (config.Has("quantization")) {
    sdk::Fail(CKB_UNSUPPORTED,
              "this checkpoint holds MLX-quantized weights (config.json 'quantization'): packed "
              "integers and scales the gptoss plugin does not read; convert the bfloat16 or the "
              "original MXFP4 release");
  }
  if (!config.Has("quantization_config")) return false;
  const json& q = config.json().at("quantization_config");
  const std::string method =
      q.is_object() && q.contains("quant_method") && q["quant_method"].is_string()
          ? q["quant_method"].get<std::string>()
          : "unknown";
  if (method == "mxfp4") return true;
  sdk::Fail(CKB_UNSUPPORTED, "this checkpoint is quantized (quantization_config.quant_method '" +
                                 method +
                                 "'), which the gptoss plugin does not convert; it reads the "
                                 "bfloat16 release and the original MXFP4 one (quant_method "
                                 "'mxfp4')");
}

// Everything the mapping needs, read once from config.json.
struct Dims {
  int64_t vocab = 0;
  int64_t embed = 0;
  int64_t mlp = 0;
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t experts = 0;
  int64_t experts_per_token = 0;
  int64_t sliding_window = 0;
  bool attention_bias = true;
  bool tied = false;
  bool mxfp4 = false;
};

Dims ReadDims(const sdk::Config& c) {
  Dims d;
  d.mxfp4 = ReadMxfp4(c);
  d.vocab = c.Dim("vocab_size");
  d.embed = c.Dim("hidden_size");
  d.mlp = c.Dim("intermediate_size");
  d.layers = c.Dim("num_hidden_layers");
  d.heads = c.Dim("num_attention_heads");
  d.kv_heads = c.Has("num_key_value_heads") ? c.Dim("num_key_value_heads") : d.heads;
  // As MaxText's HF shape table: head_dim, else hidden_size / heads.
  d.head_dim = c.Has("head_dim") ? c.Dim("head_dim") : d.embed / d.heads;
  if (d.head_dim <= 0) {
    sdk::Fail(CKB_INVALID_ARGUMENT, "config.json: no head_dim, and hidden_size " +
                                        std::to_string(d.embed) + " / num_attention_heads " +
                                        std::to_string(d.heads) + " is 0");
  }
  d.experts = c.Dim("num_local_experts");
  // transformers writes both spellings; the original release has both.
  d.experts_per_token =
      c.Has("num_experts_per_tok") ? c.Dim("num_experts_per_tok") : c.Dim("experts_per_token");
  // GptOssConfig's default window (the releases say 128 explicitly).
  d.sliding_window = c.Has("sliding_window") ? c.Dim("sliding_window") : 128;
  // GptOssConfig defaults attention_bias to true; MaxText's HF shape table
  // has the four projection biases exactly when it is set.
  d.attention_bias = c.Bool("attention_bias", true);
  d.tied = c.Bool("tie_word_embeddings", false);

  // MaxText's decoder hard-codes the attention pattern (GPT_OSS_ATTENTION_PATTERN:
  // even layers sliding, odd layers full); a config saying otherwise would
  // train a different model than it describes.
  if (c.Has("layer_types")) {
    const json& types = c.json().at("layer_types");
    if (!types.is_array() || static_cast<int64_t>(types.size()) != d.layers) {
      sdk::Fail(CKB_INVALID_ARGUMENT, "config.json: layer_types must list one entry per layer (" +
                                          std::to_string(d.layers) + "), got " + types.dump());
    }
    for (int64_t i = 0; i < d.layers; ++i) {
      const std::string want = i % 2 == 0 ? "sliding_attention" : "full_attention";
      if (types[i] != want) {
        sdk::Fail(CKB_UNSUPPORTED, "config.json: layer_types[" + std::to_string(i) + "] is " +
                                       types[i].dump() + " but MaxText's gpt_oss decoder has '" +
                                       want +
                                       "' there (it alternates sliding and full attention, "
                                       "starting with sliding)");
      }
    }
  }
  if (d.mxfp4) {
    // The in-features of each MXFP4 tensor come in whole 32-value blocks; the
    // format (and every reader of it) has no partial block.
    for (auto [key, value] :
         {std::pair<const char*, int64_t>{"hidden_size", d.embed}, {"intermediate_size", d.mlp}}) {
      if (value % kMxfp4BlockValues != 0) {
        sdk::Fail(CKB_INVALID_ARGUMENT,
                  std::string("config.json: quantization_config says mxfp4, whose blocks hold 32 "
                              "values, but ") +
                      key + " " + std::to_string(value) + " is not a multiple of 32");
      }
    }
  }
  return d;
}

// One per-layer mapping, written once and expanded for scanned (a rule per
// block of the cycle) or unscanned (a rule per layer) output.
struct LayerTensor {
  std::vector<sdk::TensorDecl> hf;  // names after "model.layers.{i}."
  std::vector<sdk::TensorDecl> mt;  // names after "decoder.layers_{i}." / "...layers_{b}."
  std::vector<sdk::Op> ops;
  bool lossy = false;
  // The HF tensors hold every expert along their leading axis and the rule
  // converts one expert at a time (`mt` and `ops` describe one expert): a
  // layer's experts are gigabytes (gpt-oss-120b: 128 x 2880 x 5760), one
  // expert is tens of megabytes, and memory follows the unit.
  bool per_expert = false;
};

LayerTensor Simple(std::string hf_suffix, sdk::Dims hf_dims, sdk::Axes hf_axes,
                   std::string mt_suffix, sdk::Dims mt_dims, sdk::Axes mt_axes,
                   std::vector<sdk::Op> ops = {}) {
  LayerTensor t;
  t.hf.push_back({std::move(hf_suffix), std::move(hf_dims), std::move(hf_axes)});
  t.mt.push_back({std::move(mt_suffix), std::move(mt_dims), std::move(mt_axes)});
  t.ops = std::move(ops);
  return t;
}

class GptOssAdapter final : public sdk::Adapter {
 public:
  explicit GptOssAdapter(const sdk::Config& config)
      : config_(config.json()), d_(ReadDims(config)) {}

  void Rules(const sdk::RuleOptions& options, sdk::RuleSet& rules) const override {
    const int64_t e = d_.embed, v = d_.vocab;
    rules.Add()
        .From("model.embed_tokens.weight", {v, e}, {Axis::kVocab, Axis::kEmbed})
        .To("token_embedder.embedding", {v, e}, {Axis::kVocab, Axis::kEmbed});
    rules.Add()
        .From("model.norm.weight", {e}, {Axis::kEmbed})
        .To("decoder.decoder_norm.scale", {e}, {Axis::kEmbed});
    if (d_.tied) {
      rules.Ignore(sdk::Side::kHf, "lm_head.weight",
                   "tie_word_embeddings is set: the output layer is the embedding");
    } else {
      rules.Add()
          .From("lm_head.weight", {v, e}, {Axis::kVocab, Axis::kEmbed})
          .To("decoder.logits_dense.kernel", {e, v}, {Axis::kEmbed, Axis::kVocab})
          .Then(sdk::Transpose({1, 0}));
    }

    // The MXFP4 layout can only be read: exporting (and reading the bfloat16
    // release) uses the dequantized names.
    const bool mxfp4 = d_.mxfp4 && options.direction == sdk::Direction::kToMaxText;
    const std::vector<LayerTensor> tensors = LayerTensors(mxfp4);
    if (options.scan_layers) {
      if (d_.layers % kLayerCycle != 0) {
        sdk::Fail(CKB_UNSUPPORTED,
                  "config.json: num_hidden_layers " + std::to_string(d_.layers) +
                      " is odd, but scanned MaxText gpt_oss checkpoints stack blocks of " +
                      std::to_string(kLayerCycle) +
                      " layers (inhomogeneous_layer_cycle_interval); use --no-scan-layers");
      }
      for (int64_t b = 0; b < kLayerCycle; ++b) {
        const std::string prefix = "decoder.layers.layers_" + std::to_string(b) + ".";
        for (const LayerTensor& t : tensors) {
          sdk::Rule& rule = rules.Add();
          for (const sdk::TensorDecl& in : t.hf) {
            rule.From("model.layers.{layer}." + in.name, in.dims, in.axes);
          }
          for (const sdk::TensorDecl& out : t.mt) rule.To(prefix + out.name, out.dims, out.axes);
          // HF layers b, b + cycle, b + 2 cycle, ... on MaxText axis 1.
          rule.Stack(Axis::kLayers, 1, d_.layers / kLayerCycle, b, kLayerCycle);
          if (t.per_expert) rule.StackLeading(Axis::kExperts, 0, d_.experts);
          for (const sdk::Op& op : t.ops) rule.Then(op);
          if (t.lossy) rule.Lossy();
        }
      }
    } else {
      for (int64_t i = 0; i < d_.layers; ++i) {
        const std::string hf_prefix = "model.layers." + std::to_string(i) + ".";
        const std::string mt_prefix = "decoder.layers_" + std::to_string(i) + ".";
        for (const LayerTensor& t : tensors) {
          sdk::Rule& rule = rules.Add();
          for (const sdk::TensorDecl& in : t.hf) rule.From(hf_prefix + in.name, in.dims, in.axes);
          for (const sdk::TensorDecl& out : t.mt) rule.To(mt_prefix + out.name, out.dims, out.axes);
          if (t.per_expert) rule.StackLeading(Axis::kExperts, 0, d_.experts);
          for (const sdk::Op& op : t.ops) rule.Then(op);
          if (t.lossy) rule.Lossy();
        }
      }
    }
  }

  // The settings of MaxText's configs/models/gpt-oss-*.yml.
  json MaxTextConfig() const override {
    json m;
    m["decoder_block"] = "gpt_oss";
    m["base_emb_dim"] = d_.embed;
    m["base_num_query_heads"] = d_.heads;
    m["base_num_kv_heads"] = d_.kv_heads;
    m["head_dim"] = d_.head_dim;
    m["sliding_window_size"] = d_.sliding_window;
    m["attention_bias"] = d_.attention_bias;
    m["attention_sink"] = true;
    m["base_mlp_dim"] = d_.mlp;
    m["base_moe_mlp_dim"] = d_.mlp;
    // GPT-OSS's clamped SwiGLU: x * sigmoid(alpha x) on the gate, linear up.
    m["mlp_activations"] = {"sigmoid", "linear"};
    m["mlp_activations_limit"] = config_.value("swiglu_limit", 7.0);
    m["routed_bias"] = true;
    m["mlp_bias"] = true;
    m["num_experts"] = d_.experts;
    m["num_experts_per_tok"] = d_.experts_per_token;
    m["base_num_decoder_layers"] = d_.layers;
    m["vocab_size"] = d_.vocab;
    m["normalization_layer_epsilon"] = config_.value("rms_norm_eps", 1e-5);
    m["enable_dropout"] = false;
    m["logits_via_embedding"] = d_.tied;
    // MaxText divides tied logits by sqrt(emb_dim) unless told not to;
    // GPT-OSS does not scale its logits.
    if (d_.tied) m["normalize_embedding_logits"] = false;
    m["inhomogeneous_layer_cycle_interval"] = kLayerCycle;

    // RoPE: transformers writes rope_scaling (v4) or rope_parameters (v5).
    json rope = json::object();
    for (const char* key : {"rope_scaling", "rope_parameters"}) {
      if (config_.contains(key) && config_[key].is_object()) {
        rope = config_[key];
        break;
      }
    }
    json theta = config_.contains("rope_theta") && config_["rope_theta"].is_number()
                     ? config_["rope_theta"]
                     : rope.value("rope_theta", json(150000));
    m["rope_max_timescale"] = theta;
    if (config_.contains("max_position_embeddings")) {
      m["max_position_embeddings"] = config_["max_position_embeddings"];
    }
    const std::string type = rope.value("rope_type", rope.value("type", std::string("default")));
    if (type == "yarn") {
      m["rope_type"] = "yarn";
      if (rope.contains("factor")) m["rope_factor"] = rope["factor"];
      if (rope.contains("original_max_position_embeddings")) {
        m["original_max_position_embeddings"] = rope["original_max_position_embeddings"];
      }
      // transformers' YaRN defaults where the config is silent.
      m["beta_fast"] = rope.value("beta_fast", json(32));
      m["beta_slow"] = rope.value("beta_slow", json(1));
      m["rope_truncate"] = rope.value("truncate", true);
      // HF rotates the two halves of each head (no interleave) and scales
      // cos/sin by YaRN's attention factor.
      m["rope_interleave"] = false;
      m["rope_attention_scaling"] = true;
    } else {
      m["rope_type"] = "default";
    }
    return m;
  }

  json HfConfig() const override {
    json out = config_;
    out["model_type"] = "gpt_oss";
    if (!out.contains("architectures")) out["architectures"] = {"GptOssForCausalLM"};
    if (d_.mxfp4) {
      // Export writes dequantized weights, in bfloat16 unless --save-dtype
      // says otherwise (the MXFP4 release's config names no dtype).
      out.erase("quantization_config");
      if (!out.contains("torch_dtype") && !out.contains("dtype")) out["torch_dtype"] = "bfloat16";
    }
    return out;
  }

  void ApplyCustom(int32_t id, const std::vector<sdk::TensorView>& inputs,
                   const std::vector<sdk::TensorView>& outputs) const override {
    if (id != kDequantMxfp4) {
      sdk::Fail(CKB_NOT_FOUND, "gptoss: unknown custom transform " + std::to_string(id) +
                                   " (the plugin has one: " + std::to_string(kDequantMxfp4) +
                                   ", mxfp4 dequantization)");
    }
    DequantizeMxfp4(inputs, outputs);
  }

 private:
  std::vector<LayerTensor> LayerTensors(bool mxfp4) const {
    const int64_t e = d_.embed, nq = d_.heads, nkv = d_.kv_heads, hd = d_.head_dim;
    const int64_t x = d_.experts, f = d_.mlp;
    const std::string attn = "GptOssAttention.", moe = "GptOssMlp.";
    std::vector<LayerTensor> t;
    t.push_back(Simple("input_layernorm.weight", {e}, {Axis::kEmbed},
                       "pre_self_attention_layer_norm.scale", {e}, {Axis::kEmbed}));
    t.push_back(Simple("post_attention_layernorm.weight", {e}, {Axis::kEmbed},
                       "post_self_attention_layer_norm.scale", {e}, {Axis::kEmbed}));
    // Kernels: transpose the torch [out, in] and split the fused head axis
    // (MaxText's reshape_kernel); GPT-OSS scales queries at run time, so no
    // factor here.
    t.push_back(Simple("self_attn.q_proj.weight", {nq * hd, e}, {Axis::kFused, Axis::kEmbed},
                       attn + "query.kernel", {e, nq, hd},
                       {Axis::kEmbed, Axis::kHeads, Axis::kHeadDim},
                       {sdk::Transpose({1, 0}), sdk::Reshape({e, nq, hd})}));
    for (const char* name : {"key", "value"}) {
      const std::string proj = std::string(name) == "key" ? "k_proj" : "v_proj";
      t.push_back(Simple("self_attn." + proj + ".weight", {nkv * hd, e},
                         {Axis::kFused, Axis::kEmbed}, attn + name + ".kernel", {e, nkv, hd},
                         {Axis::kEmbed, Axis::kKvHeads, Axis::kHeadDim},
                         {sdk::Transpose({1, 0}), sdk::Reshape({e, nkv, hd})}));
    }
    t.push_back(Simple("self_attn.o_proj.weight", {e, nq * hd}, {Axis::kEmbed, Axis::kFused},
                       attn + "out.kernel", {nq, hd, e},
                       {Axis::kHeads, Axis::kHeadDim, Axis::kEmbed},
                       {sdk::Transpose({1, 0}), sdk::Reshape({nq, hd, e})}));
    if (d_.attention_bias) {
      t.push_back(Simple("self_attn.q_proj.bias", {nq * hd}, {Axis::kFused}, attn + "query.bias",
                         {nq, hd}, {Axis::kHeads, Axis::kHeadDim}, {sdk::Reshape({nq, hd})}));
      t.push_back(Simple("self_attn.k_proj.bias", {nkv * hd}, {Axis::kFused}, attn + "key.bias",
                         {nkv, hd}, {Axis::kKvHeads, Axis::kHeadDim}, {sdk::Reshape({nkv, hd})}));
      t.push_back(Simple("self_attn.v_proj.bias", {nkv * hd}, {Axis::kFused}, attn + "value.bias",
                         {nkv, hd}, {Axis::kKvHeads, Axis::kHeadDim}, {sdk::Reshape({nkv, hd})}));
      t.push_back(Simple("self_attn.o_proj.bias", {e}, {Axis::kEmbed}, attn + "out.bias", {e},
                         {Axis::kEmbed}));
    }
    t.push_back(
        Simple("self_attn.sinks", {nq}, {Axis::kHeads}, attn + "sinks", {nq}, {Axis::kHeads}));
    t.push_back(Simple("mlp.router.weight", {x, e}, {Axis::kExperts, Axis::kEmbed},
                       moe + "gate.kernel", {e, x}, {Axis::kEmbed, Axis::kExperts},
                       {sdk::Transpose({1, 0})}));
    t.push_back(
        Simple("mlp.router.bias", {x}, {Axis::kExperts}, moe + "gate.bias", {x}, {Axis::kExperts}));

    // The fused gate/up projection interleaves its columns: gate at even
    // positions, up at odd ones. Deinterleave gathers the evens first, then
    // the odds; Split hands one half to each MaxText tensor.
    // One expert per unit (per_expert): the MaxText shapes and the ops below
    // are those of one expert; the expert axis is MaxText axis 0.
    const sdk::Axes in_out = {Axis::kEmbed, Axis::kMlp};
    LayerTensor gate_up;
    gate_up.per_expert = true;
    gate_up.mt = {{moe + "wi_0", {e, f}, in_out}, {moe + "wi_1", {e, f}, in_out}};
    LayerTensor down;
    down.per_expert = true;
    down.mt = {{moe + "wo", {f, e}, {Axis::kMlp, Axis::kEmbed}}};
    if (mxfp4) {
      // Blocks [out, in/32, 16] + scales [out, in/32] -> [out, in] per
      // expert, then transposed to the bfloat16 release's [in, out].
      const sdk::Axes block_axes = {Axis::kExperts, Axis::kOther, Axis::kOther, Axis::kOther};
      const sdk::Axes scale_axes = {Axis::kExperts, Axis::kOther, Axis::kOther};
      gate_up.hf = {
          {"mlp.experts.gate_up_proj_blocks",
           {x, 2 * f, e / kMxfp4BlockValues, kMxfp4BlockBytes},
           block_axes},
          {"mlp.experts.gate_up_proj_scales", {x, 2 * f, e / kMxfp4BlockValues}, scale_axes}};
      gate_up.ops = {sdk::Custom(kDequantMxfp4, {2 * f, e}), sdk::Transpose({1, 0})};
      gate_up.lossy = true;
      down.hf = {{"mlp.experts.down_proj_blocks",
                  {x, e, f / kMxfp4BlockValues, kMxfp4BlockBytes},
                  block_axes},
                 {"mlp.experts.down_proj_scales", {x, e, f / kMxfp4BlockValues}, scale_axes}};
      down.ops = {sdk::Custom(kDequantMxfp4, {e, f}), sdk::Transpose({1, 0})};
      down.lossy = true;
    } else {
      gate_up.hf = {{"mlp.experts.gate_up_proj",
                     {x, e, 2 * f},
                     {Axis::kExperts, Axis::kEmbed, Axis::kFused}}};
      down.hf = {{"mlp.experts.down_proj", {x, f, e}, {Axis::kExperts, Axis::kMlp, Axis::kEmbed}}};
    }
    gate_up.ops.push_back(sdk::Deinterleave(1));
    gate_up.ops.push_back(sdk::Split(1, {f, f}));
    t.push_back(std::move(gate_up));
    t.push_back(std::move(down));

    LayerTensor gate_up_bias;
    gate_up_bias.hf = {
        {"mlp.experts.gate_up_proj_bias", {x, 2 * f}, {Axis::kExperts, Axis::kFused}}};
    gate_up_bias.mt = {{moe + "wi_0_bias", {x, f}, {Axis::kExperts, Axis::kMlp}},
                       {moe + "wi_1_bias", {x, f}, {Axis::kExperts, Axis::kMlp}}};
    gate_up_bias.ops = {sdk::Deinterleave(1), sdk::Split(1, {f, f})};
    t.push_back(std::move(gate_up_bias));
    t.push_back(Simple("mlp.experts.down_proj_bias", {x, e}, {Axis::kExperts, Axis::kEmbed},
                       moe + "wo_bias", {x, e}, {Axis::kExperts, Axis::kEmbed}));
    return t;
  }

  json config_;
  Dims d_;
};

// HF config.json of MaxText's model names: hf_model_configs.py's
// gpt_oss_{20b,120b}_dict (the published openai/gpt-oss-* configs without
// quantization_config, as the bfloat16 releases have them).
json Preset(std::string_view name) {
  auto gpt_oss = [](int64_t layers, int64_t experts) {
    json layer_types = json::array();
    for (int64_t i = 0; i < layers; ++i) {
      layer_types.push_back(i % 2 == 0 ? "sliding_attention" : "full_attention");
    }
    return json{{"architectures", {"GptOssForCausalLM"}},
                {"attention_bias", true},
                {"attention_dropout", 0.0},
                {"eos_token_id", 200002},
                {"experts_per_token", 4},
                {"head_dim", 64},
                {"hidden_act", "silu"},
                {"hidden_size", 2880},
                {"initial_context_length", 4096},
                {"initializer_range", 0.02},
                {"intermediate_size", 2880},
                {"layer_types", layer_types},
                {"max_position_embeddings", 131072},
                {"model_type", "gpt_oss"},
                {"num_attention_heads", 64},
                {"num_experts_per_tok", 4},
                {"num_hidden_layers", layers},
                {"num_key_value_heads", 8},
                {"num_local_experts", experts},
                {"output_router_logits", false},
                {"pad_token_id", 199999},
                {"rms_norm_eps", 1e-05},
                {"rope_scaling",
                 {{"beta_fast", 32.0},
                  {"beta_slow", 1.0},
                  {"factor", 32.0},
                  {"original_max_position_embeddings", 4096},
                  {"rope_theta", 150000},
                  {"rope_type", "yarn"},
                  {"truncate", false}}},
                {"rope_theta", 150000},
                {"router_aux_loss_coef", 0.9},
                {"sliding_window", 128},
                {"swiglu_limit", 7.0},
                {"tie_word_embeddings", false},
                {"torch_dtype", "bfloat16"},
                {"transformers_version", "4.55.0.dev0"},
                {"use_cache", true},
                {"vocab_size", 201088}};
  };
  if (name == "gpt-oss-20b") return gpt_oss(24, 32);
  if (name == "gpt-oss-120b") return gpt_oss(36, 128);
  sdk::Fail(CKB_NOT_FOUND, "unknown model '" + std::string(name) + "'");
}

// A tiny bfloat16 config for `ckptbridge plugins check` (one sliding and one
// full attention layer).
std::vector<sdk::SampleConfig> Samples() {
  json c = {{"model_type", "gpt_oss"},
            {"vocab_size", 40},
            {"hidden_size", 24},
            {"intermediate_size", 20},
            {"num_hidden_layers", 2},
            {"num_attention_heads", 4},
            {"num_key_value_heads", 1},
            {"head_dim", 10},
            {"num_local_experts", 3},
            {"num_experts_per_tok", 2},
            {"experts_per_token", 2},
            {"attention_bias", true},
            {"layer_types", {"sliding_attention", "full_attention"}},
            {"sliding_window", 8},
            {"rms_norm_eps", 1e-5},
            {"rope_theta", 150000},
            {"swiglu_limit", 7.0},
            {"tie_word_embeddings", false},
            {"torch_dtype", "bfloat16"}};
  return {{"gpt_oss", "bf16", c}};
}

sdk::PluginDefinition Describe() {
  sdk::PluginDefinition d;
  d.name = "gptoss";
  d.version = CKPTBRIDGE_PLUGIN_VERSION;
  d.description = "GPT-OSS 20B/120B (MaxText decoder block gpt_oss), bfloat16 or MXFP4 sources";
  d.model_types = {"gpt_oss"};
  d.architectures = {"GptOssForCausalLM"};
  d.model_presets = {"gpt-oss-20b", "gpt-oss-120b"};
  // ApplyCustom reads only its arguments.
  d.flags = CKB_PLUGIN_THREAD_SAFE_ADAPTERS;
  // Expert tensors are converted one expert at a time (StackLeading).
  d.abi_minor = 2;
  d.create = [](std::string_view /*model_type*/, const sdk::Config& config) {
    return std::make_unique<GptOssAdapter>(config);
  };
  d.preset = &Preset;
  d.samples = Samples();
  return d;
}

}  // namespace

CKPTBRIDGE_PLUGIN(Describe)
