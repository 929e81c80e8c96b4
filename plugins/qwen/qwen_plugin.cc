// plugins/qwen - Qwen2.5, Qwen3 dense, Qwen3-MoE and Qwen3-Next, HF <-> MaxText.
//
// The mapping is MaxText's own (checkpoint_conversion/utils/param_mapping.py:
// QWEN_* for qwen2/qwen3/qwen3_moe, QWEN3_NEXT_* for qwen3_next;
// shared/docs/maxtext-mapping.md §6.5, §6.6, §6.10), with every dimension read
// from config.json. Every hook is a pure layout change (no scaling: Qwen
// scales the query at run time), so both directions are lossless.
//
//   HF                                     MaxText (scanned: layer axis 1)
//   model.embed_tokens.weight [V, E]       token_embedder.embedding [Vmt, E]
//   model.norm.weight [E]                  decoder.decoder_norm.scale [E]
//   lm_head.weight [V, E]                  decoder.logits_dense.kernel [E, Vmt] (untied only)
//
//   qwen2 / qwen3 / qwen3_moe, under decoder.layers (scanned) or decoder.layers_{i}:
//   layers.i.input_layernorm [E]           pre_self_attention_layer_norm.scale
//   layers.i.post_attention_layernorm [E]  post_self_attention_layer_norm.scale
//   self_attn.q_proj [Nq*D, E]             self_attention.query.kernel [E, Nq, D]
//   self_attn.k_proj/v_proj [Nkv*D, E]     self_attention.key/value.kernel [E, Nkv, D]
//   self_attn.o_proj [E, Nq*D]             self_attention.out.kernel [Nq, D, E]
//   self_attn.q_norm/k_norm [D]            self_attention.query_norm/key_norm.scale (qwen3*)
//   self_attn.q/k/v_proj.bias [N*D]        self_attention.query/key/value.bias [N, D] (qwen2)
//   mlp.gate/up_proj [F, E], down [E, F]   mlp.wi_0/wi_1.kernel [E, F], mlp.wo.kernel [F, E]
//   qwen3_moe: mlp.gate [X, E]             moe_block.gate.kernel [E, X]
//              mlp.experts.j.gate/up_proj  moe_block.wi_0/wi_1 [X, E, Fm]
//              mlp.experts.j.down_proj     moe_block.wo [X, Fm, E]
//              (experts stacked on axis 0, then layers on axis 1 when scanned)
//
//   qwen3_next, in cycles of C = full_attention_interval (4) layers: scanned
//   block b is decoder.layers.layer_{b} (note `layer_`) holding HF layers
//   b, b+C, b+2C, ...; unscanned layer i is decoder.layers_{i}. Layer i is full
//   attention iff i % C == C-1, otherwise Gated DeltaNet (linear attention).
//   input_layernorm / post_attention_layernorm  input_layernorm / post_attention_layernorm.scale
//   full:   self_attn.q_proj [Nq*2D, E]    attention.attention.query.kernel [E, Nq, 2D]
//           (per head: D query columns, then D gate columns, as HF views it)
//           self_attn.k_proj/v_proj        attention.attention.key/value.kernel [E, Nkv, D]
//           self_attn.o_proj [E, Nq*D]     attention.attention.out.kernel [Nq*D, E]
//           self_attn.q_norm/k_norm [D]    attention.attention.query_norm/key_norm.scale
//   linear: linear_attn.in_proj_qkvz [2Kd+2Vd, E]   attention.in_proj_qkvz.kernel [E, 2Kd+2Vd]
//           linear_attn.in_proj_ba [2Hv, E]         attention.in_proj_ba.kernel [E, 2Hv]
//           linear_attn.conv1d [Kd*2+Vd, 1, K]      attention.conv1d.kernel [K, 1, Kd*2+Vd]
//           linear_attn.A_log / dt_bias [Hv]        attention.A_log / dt_bias [Hv] (float32)
//           linear_attn.norm [Dv]                   attention.norm.rms_norm.scale [Dv]
//           linear_attn.out_proj [E, Vd]            attention.out_proj.kernel [Vd, E]
//   every:  mlp.gate [X, E]                mlp.routed_experts.gate.kernel [E, X]
//           mlp.experts.j.*                mlp.routed_experts.wi_0/wi_1/wo (as qwen3_moe)
//           mlp.shared_expert.*_proj       mlp.shared_expert.wi_0/wi_1/wo.kernel
//           mlp.shared_expert_gate [1, E]  mlp.shared_expert_gate.kernel [E, 1]
//   Qwen3-Next's RMSNorms are zero-centred (x * (1 + w)) in both HF and MaxText,
//   so they map as identity.
//
// Vocabulary: MaxText's embedding may have more rows than HF's (a MaxText
// vocab_size padded for sharding). A config.json key `maxtext_vocab_size`
// (ckptbridge's own, dropped on export) asks for that: rows are zero-padded
// on import and cut on export, as MaxText's pad_embedding_layer hook does.
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "ckptbridge/sdk/plugin.hpp"

namespace {

namespace sdk = ckptbridge::sdk;
using nlohmann::json;
using sdk::Axis;

enum class Family { kQwen2, kQwen3, kQwen3Moe, kQwen3Next };

struct FamilyInfo {
  Family family;
  const char* model_type;
  const char* architecture;
  const char* decoder_block;  // MaxText's decoder_block
};

// The order is the descriptor's: model_types[i] goes with architectures[i].
constexpr FamilyInfo kFamilies[] = {
    {Family::kQwen3, "qwen3", "Qwen3ForCausalLM", "qwen3"},
    {Family::kQwen3Moe, "qwen3_moe", "Qwen3MoeForCausalLM", "qwen3_moe"},
    {Family::kQwen3Next, "qwen3_next", "Qwen3NextForCausalLM", "qwen3_next"},
    {Family::kQwen2, "qwen2", "Qwen2ForCausalLM", "qwen2"},
};

const FamilyInfo& InfoOf(Family family) {
  for (const FamilyInfo& info : kFamilies) {
    if (info.family == family) return info;
  }
  return kFamilies[0];
}

Family FamilyOf(std::string_view model_type) {
  for (const FamilyInfo& info : kFamilies) {
    if (model_type == info.model_type) return info.family;
  }
  sdk::Fail(CKB_NOT_FOUND, "the qwen plugin does not serve model_type '" + std::string(model_type) +
                               "' (it serves qwen3, qwen3_moe, qwen3_next, qwen2)");
}

std::string Str(int64_t v) { return std::to_string(v); }

// Everything the mapping needs, read once from config.json.
struct Dims {
  Family family = Family::kQwen3;
  int64_t vocab = 0;     // HF rows: config vocab_size
  int64_t mt_vocab = 0;  // MaxText rows: maxtext_vocab_size, else vocab_size
  int64_t embed = 0;
  int64_t mlp = 0;  // dense MLP width (qwen2/qwen3)
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  bool tied = false;
  std::string activation = "silu";
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  // MoE (qwen3_moe, qwen3_next)
  int64_t experts = 0;
  int64_t experts_per_token = 0;
  int64_t moe_mlp = 0;
  bool norm_topk_prob = false;
  // qwen3_next
  int64_t cycle = 0;  // full_attention_interval
  int64_t linear_key_heads = 0;
  int64_t linear_key_dim = 0;
  int64_t linear_value_heads = 0;
  int64_t linear_value_dim = 0;
  int64_t conv_kernel = 0;
  double partial_rotary_factor = 1.0;

  bool moe() const { return family == Family::kQwen3Moe || family == Family::kQwen3Next; }
  int64_t linear_key_total() const { return linear_key_heads * linear_key_dim; }
  int64_t linear_value_total() const { return linear_value_heads * linear_value_dim; }
  int64_t conv_dim() const { return 2 * linear_key_total() + linear_value_total(); }
  int64_t qkvz_dim() const { return 2 * linear_key_total() + 2 * linear_value_total(); }
  // Full attention in a cycle's last layer (MaxText: (i + 1) % C == 0).
  bool full_attention(int64_t layer) const { return (layer + 1) % cycle == 0; }
};

// Refuses quantized checkpoints with the reason and the way out: their
// tensors are packed integers plus scales (or FP8 with block scales), not
// weights that map onto MaxText's parameters.
void RefuseQuantized(const sdk::Config& config) {
  if (config.Has("quantization")) {
    const json& q = config.json().at("quantization");
    std::string detail = "MLX-quantized";
    if (q.is_object()) {
      detail = "MLX " + std::to_string(q.value("bits", 0)) + "-bit " +
               q.value("mode", std::string("affine")) + ", group size " +
               std::to_string(q.value("group_size", 0));
    }
    sdk::Fail(CKB_UNSUPPORTED,
              "this checkpoint holds quantized weights (" + detail +
                  "): packed integers and scales, not the original weights; convert the "
                  "unquantized checkpoint, or dequantize it first (mlx_lm.convert --dequantize)");
  }
  if (config.Has("quantization_config")) {
    const json& q = config.json().at("quantization_config");
    const std::string method =
        q.is_object() ? q.value("quant_method", std::string("unknown")) : "unknown";
    sdk::Fail(CKB_UNSUPPORTED, "this checkpoint is quantized (quantization_config.quant_method '" +
                                   method +
                                   "'), which the qwen plugin does not convert; use the "
                                   "unquantized bfloat16 release (e.g. Qwen/Qwen3-8B rather than "
                                   "Qwen/Qwen3-8B-FP8)");
  }
}

// A value that transformers keeps either at the top level (older configs) or
// under rope_parameters (newer ones).
double RopeNumber(const sdk::Config& c, std::string_view key, double fallback) {
  if (c.Has(key)) return c.Number(key);
  if (c.Has("rope_parameters") && c.json().at("rope_parameters").is_object()) {
    const sdk::Config rope = c.Object("rope_parameters");
    if (rope.Has(key)) return rope.Number(key);
  }
  return fallback;
}

// MaxText's qwen3_moe and qwen3_next decoder blocks put a routed MoE in every
// layer; HF can make some layers dense, which has no MaxText counterpart.
void RequireEveryLayerSparse(const sdk::Config& c, std::string_view block) {
  const int64_t step = c.Int("decoder_sparse_step", 1);
  if (step != 1) {
    sdk::Fail(CKB_UNSUPPORTED, "config.json: decoder_sparse_step is " + Str(step) +
                                   ", so only every " + Str(step) +
                                   "th layer is MoE, but MaxText's " + std::string(block) +
                                   " decoder block has a routed MoE in every layer (it needs 1)");
  }
  if (c.Has("mlp_only_layers")) {
    const json& dense = c.json().at("mlp_only_layers");
    if (!dense.is_array()) {
      sdk::Fail(CKB_INVALID_ARGUMENT,
                "config.json: 'mlp_only_layers' must be a list, got " + dense.dump());
    }
    if (!dense.empty()) {
      sdk::Fail(CKB_UNSUPPORTED, "config.json: mlp_only_layers " + dense.dump() +
                                     " makes those layers dense, but MaxText's " +
                                     std::string(block) +
                                     " decoder block has a routed MoE in every layer");
    }
  }
}

void RefuseAttentionBias(const sdk::Config& c, std::string_view block) {
  if (c.Bool("attention_bias", false)) {
    sdk::Fail(CKB_UNSUPPORTED, "config.json: attention_bias is true, but MaxText's " +
                                   std::string(block) +
                                   " decoder block has no attention bias parameters");
  }
}

// Qwen3-Next's cycle: full_attention_interval, checked against layer_types
// when the config lists them (transformers derives one from the other).
int64_t ReadCycle(const sdk::Config& c, int64_t layers) {
  int64_t cycle = c.Has("full_attention_interval") ? c.Dim("full_attention_interval") : 0;
  if (!c.Has("layer_types")) return cycle ? cycle : 4;  // transformers' default
  const json& types = c.json().at("layer_types");
  if (!types.is_array() || static_cast<int64_t>(types.size()) != layers) {
    sdk::Fail(CKB_INVALID_ARGUMENT, "config.json: 'layer_types' must list " + Str(layers) +
                                        " layer types (num_hidden_layers), got " + types.dump());
  }
  if (cycle == 0) {
    for (size_t i = 0; i < types.size() && cycle == 0; ++i) {
      if (types[i] == "full_attention") cycle = static_cast<int64_t>(i) + 1;
    }
    if (cycle == 0) cycle = 4;
  }
  for (size_t i = 0; i < types.size(); ++i) {
    const bool full = (static_cast<int64_t>(i) + 1) % cycle == 0;
    const char* want = full ? "full_attention" : "linear_attention";
    if (types[i] != want) {
      sdk::Fail(CKB_UNSUPPORTED, "config.json: layer_types[" + std::to_string(i) + "] is " +
                                     types[i].dump() +
                                     " but MaxText's qwen3_next decoder block makes layer " +
                                     std::to_string(i) + " " + want + " (full attention on every " +
                                     Str(cycle) + "th layer, inhomogeneous_layer_cycle_interval)");
    }
  }
  return cycle;
}

Dims ReadDims(std::string_view model_type, const sdk::Config& c) {
  RefuseQuantized(c);
  Dims d;
  d.family = FamilyOf(model_type);
  const char* block = InfoOf(d.family).decoder_block;
  d.vocab = c.Dim("vocab_size");
  d.mt_vocab = c.Has("maxtext_vocab_size") ? c.Dim("maxtext_vocab_size") : d.vocab;
  if (d.mt_vocab < d.vocab) {
    sdk::Fail(CKB_INVALID_ARGUMENT, "config.json: maxtext_vocab_size " + Str(d.mt_vocab) +
                                        " is smaller than vocab_size " + Str(d.vocab) +
                                        "; MaxText's embedding can be padded, not cut");
  }
  d.embed = c.Dim("hidden_size");
  d.layers = c.Dim("num_hidden_layers");
  d.heads = c.Dim("num_attention_heads");
  d.kv_heads = c.Has("num_key_value_heads") ? c.Dim("num_key_value_heads") : d.heads;
  if (d.heads % d.kv_heads != 0) {
    sdk::Fail(CKB_INVALID_ARGUMENT, "config.json: num_attention_heads " + Str(d.heads) +
                                        " is not a multiple of num_key_value_heads " +
                                        Str(d.kv_heads));
  }
  // transformers' defaults when head_dim is absent: Qwen3Config says 128,
  // Qwen3NextConfig 256, the others hidden_size / num_attention_heads.
  if (c.Has("head_dim")) {
    d.head_dim = c.Dim("head_dim");
  } else if (d.family == Family::kQwen3) {
    d.head_dim = 128;
  } else if (d.family == Family::kQwen3Next) {
    d.head_dim = 256;
  } else {
    if (d.embed % d.heads != 0) {
      sdk::Fail(CKB_INVALID_ARGUMENT, "config.json: no head_dim, and hidden_size " + Str(d.embed) +
                                          " is not a multiple of " + "num_attention_heads " +
                                          Str(d.heads));
    }
    d.head_dim = d.embed / d.heads;
  }
  d.tied = c.Bool("tie_word_embeddings", false);
  d.activation = c.String("hidden_act", "silu");
  d.rms_norm_eps = c.Number("rms_norm_eps", 1e-6);
  d.rope_theta = RopeNumber(c, "rope_theta", 10000.0);

  switch (d.family) {
    case Family::kQwen2:
      // Qwen2 always has q/k/v biases (and none on o_proj), whatever the
      // config says; MaxText's qwen2 block has the same three.
      d.mlp = c.Dim("intermediate_size");
      break;
    case Family::kQwen3:
      RefuseAttentionBias(c, block);
      d.mlp = c.Dim("intermediate_size");
      break;
    case Family::kQwen3Moe:
      RefuseAttentionBias(c, block);
      RequireEveryLayerSparse(c, block);
      d.experts = c.Has("num_experts") ? c.Dim("num_experts") : c.Dim("num_local_experts");
      if (d.experts < 2) {
        sdk::Fail(CKB_INVALID_ARGUMENT, "config.json: num_experts is " + Str(d.experts) +
                                            "; a qwen3_moe model needs at least 2 experts");
      }
      d.experts_per_token = c.Dim("num_experts_per_tok");
      d.moe_mlp = c.Dim("moe_intermediate_size");
      d.mlp = d.moe_mlp;  // MaxText's qwen3-*-a*b.yml say base_mlp_dim = moe width
      d.norm_topk_prob = c.Bool("norm_topk_prob", false);
      break;
    case Family::kQwen3Next: {
      RefuseAttentionBias(c, block);
      RequireEveryLayerSparse(c, block);
      d.experts = c.Dim("num_experts");
      d.experts_per_token = c.Dim("num_experts_per_tok");
      d.moe_mlp = c.Dim("moe_intermediate_size");
      d.mlp = d.moe_mlp;
      const int64_t shared = c.Dim("shared_expert_intermediate_size");
      if (shared != d.moe_mlp) {
        sdk::Fail(CKB_UNSUPPORTED,
                  "config.json: shared_expert_intermediate_size " + Str(shared) +
                      " differs from moe_intermediate_size " + Str(d.moe_mlp) +
                      ", but MaxText's qwen3_next block sizes the shared expert with "
                      "base_moe_mlp_dim too");
      }
      d.norm_topk_prob = c.Bool("norm_topk_prob", true);
      d.linear_key_heads = c.Dim("linear_num_key_heads");
      d.linear_key_dim = c.Dim("linear_key_head_dim");
      d.linear_value_heads = c.Dim("linear_num_value_heads");
      d.linear_value_dim = c.Dim("linear_value_head_dim");
      d.conv_kernel = c.Dim("linear_conv_kernel_dim");
      if (d.linear_value_heads % d.linear_key_heads != 0) {
        sdk::Fail(CKB_INVALID_ARGUMENT,
                  "config.json: linear_num_value_heads " + Str(d.linear_value_heads) +
                      " is not a multiple of linear_num_key_heads " + Str(d.linear_key_heads));
      }
      d.cycle = ReadCycle(c, d.layers);
      d.partial_rotary_factor = RopeNumber(c, "partial_rotary_factor", 0.25);
      break;
    }
  }
  return d;
}

// One per-layer mapping, expressed once and expanded for scanned (one rule,
// layer axis 1) or unscanned (a rule per layer) output.
struct LayerTensor {
  std::string hf;  // after "model.layers.{i}."
  sdk::Dims hf_dims;
  sdk::Axes hf_axes;
  std::string mt;     // after the layer container ("decoder.layers." ...)
  sdk::Dims mt_dims;  // one layer; for experts, one expert of one layer
  sdk::Axes mt_axes;
  std::vector<sdk::Op> ops;
  bool per_expert = false;  // `{expert}` in hf: stacked on MaxText axis 0
  bool keep_f32 = false;    // float32 whatever the save dtype (Rule::KeepF32)
};

// A tensor copied as is (norm scales, A_log, dt_bias).
LayerTensor Same(std::string hf, std::string mt, int64_t n, Axis axis) {
  return {std::move(hf), {n}, {axis}, std::move(mt), {n}, {axis}, {}};
}

// torch Linear [out, in] -> MaxText kernel [in, out] (MaxText's "transpose").
LayerTensor Linear(std::string hf, std::string mt, int64_t out, Axis out_axis, int64_t in,
                   Axis in_axis) {
  LayerTensor t;
  t.hf = std::move(hf);
  t.hf_dims = {out, in};
  t.hf_axes = {out_axis, in_axis};
  t.mt = std::move(mt);
  t.mt_dims = {in, out};
  t.mt_axes = {in_axis, out_axis};
  t.ops = {sdk::Transpose({1, 0})};
  return t;
}

// torch Linear [out, in] -> MaxText kernel [in, ...] with the out axis split
// row-major into `mt_dims` after the transpose (MaxText's reshape_kernel).
LayerTensor Projection(std::string hf, sdk::Dims hf_dims, sdk::Axes hf_axes, std::string mt,
                       sdk::Dims mt_dims, sdk::Axes mt_axes) {
  sdk::Dims shape = mt_dims;
  return {std::move(hf),
          std::move(hf_dims),
          std::move(hf_axes),
          std::move(mt),
          std::move(mt_dims),
          std::move(mt_axes),
          {sdk::Transpose({1, 0}), sdk::Reshape(std::move(shape))}};
}

// One routed expert's weight: HF keeps one tensor per expert.
LayerTensor Expert(std::string hf, std::string mt, int64_t out, Axis out_axis, int64_t in,
                   Axis in_axis) {
  LayerTensor t = Linear(std::move(hf), std::move(mt), out, out_axis, in, in_axis);
  t.per_expert = true;
  return t;
}

class QwenAdapter final : public sdk::Adapter {
 public:
  QwenAdapter(std::string_view model_type, const sdk::Config& config)
      : config_(config.json()), d_(ReadDims(model_type, config)) {}

  void Rules(const sdk::RuleOptions& options, sdk::RuleSet& rules) const override {
    const bool next = d_.family == Family::kQwen3Next;
    if (next && options.raw.value("mtp", false)) {
      sdk::Fail(CKB_UNSUPPORTED,
                "--mtp: MaxText's qwen3_next decoder block has no multi-token-prediction "
                "layers to hold the checkpoint's mtp.* tensors; convert without --mtp (they are "
                "then skipped)");
    }
    if (next && options.scan_layers && d_.layers % d_.cycle != 0) {
      // MaxText scans num_decoder_layers / cycle whole cycles and would drop
      // the rest; refuse instead of losing layers.
      sdk::Fail(CKB_UNSUPPORTED,
                "config.json: num_hidden_layers " + Str(d_.layers) +
                    " is not a multiple of full_attention_interval " + Str(d_.cycle) +
                    ", but MaxText's scanned qwen3_next layers are whole cycles of " +
                    Str(d_.cycle) + "; convert with --no-scan-layers");
    }
    AddTopLevel(rules);
    rules.Ignore(sdk::Side::kHf, "model.layers.*.self_attn.rotary_emb.inv_freq",
                 "RoPE frequencies are recomputed from rope_theta");
    if (next) {
      rules.Ignore(sdk::Side::kHf, "mtp.*",
                   "multi-token-prediction layers, which MaxText's qwen3_next decoder block "
                   "does not have");
    }

    if (!next) {
      const std::vector<LayerTensor> tensors = DecoderLayer();
      if (options.scan_layers) {
        Emit(rules, tensors, "decoder.layers.", "model.layers.{layer}.", true, 0, 1);
      } else {
        for (int64_t i = 0; i < d_.layers; ++i) {
          Emit(rules, tensors, "decoder.layers_" + Str(i) + ".", "model.layers." + Str(i) + ".",
               false, 0, 0);
        }
      }
      return;
    }
    if (options.scan_layers) {
      for (int64_t b = 0; b < d_.cycle; ++b) {
        Emit(rules, NextLayer(d_.full_attention(b)), "decoder.layers.layer_" + Str(b) + ".",
             "model.layers.{layer}.", true, b, d_.cycle);
      }
    } else {
      for (int64_t i = 0; i < d_.layers; ++i) {
        Emit(rules, NextLayer(d_.full_attention(i)), "decoder.layers_" + Str(i) + ".",
             "model.layers." + Str(i) + ".", false, 0, 0);
      }
    }
  }

  json MaxTextConfig() const override {
    json m;
    m["decoder_block"] = InfoOf(d_.family).decoder_block;
    m["base_emb_dim"] = d_.embed;
    m["base_num_query_heads"] = d_.heads;
    m["base_num_kv_heads"] = d_.kv_heads;
    m["base_mlp_dim"] = d_.mlp;
    m["base_num_decoder_layers"] = d_.layers;
    m["head_dim"] = d_.head_dim;
    m["mlp_activations"] = {d_.activation, "linear"};
    m["vocab_size"] = d_.mt_vocab;
    m["normalization_layer_epsilon"] = d_.rms_norm_eps;
    m["rope_max_timescale"] = d_.rope_theta;
    m["logits_via_embedding"] = d_.tied;
    // MaxText divides tied logits by sqrt(emb_dim) unless told not to; Qwen
    // does not scale its logits.
    m["normalize_embedding_logits"] = false;
    m["enable_dropout"] = false;
    m["tokenizer_type"] = "huggingface";
    switch (d_.family) {
      case Family::kQwen2:
        m["use_qk_norm"] = false;
        m["attention_bias"] = true;
        break;
      case Family::kQwen3:
      case Family::kQwen3Moe:
        m["use_qk_norm"] = true;
        break;
      case Family::kQwen3Next:
        break;
    }
    if (d_.moe()) {
      m["num_experts"] = d_.experts;
      m["num_experts_per_tok"] = d_.experts_per_token;
      m["base_moe_mlp_dim"] = d_.moe_mlp;
      m["norm_topk_prob"] = d_.norm_topk_prob;
    }
    if (d_.family == Family::kQwen3Next) {
      m["shared_experts"] = 1;
      m["inhomogeneous_layer_cycle_interval"] = d_.cycle;
      m["gdn_conv_kernel_dim"] = d_.conv_kernel;
      m["gdn_key_head_dim"] = d_.linear_key_dim;
      m["gdn_value_head_dim"] = d_.linear_value_dim;
      m["gdn_num_key_heads"] = d_.linear_key_heads;
      m["gdn_num_value_heads"] = d_.linear_value_heads;
      m["partial_rotary_factor"] = d_.partial_rotary_factor;
    }
    return m;
  }

  json HfConfig() const override {
    json out = config_;
    // Our own key: the exported tensors have vocab_size rows again.
    out.erase("maxtext_vocab_size");
    const FamilyInfo& info = InfoOf(d_.family);
    out["model_type"] = info.model_type;
    if (!out.contains("architectures") || !out["architectures"].is_array() ||
        out["architectures"].empty()) {
      out["architectures"] = {info.architecture};
    }
    return out;
  }

 private:
  void AddTopLevel(sdk::RuleSet& rules) const {
    const int64_t e = d_.embed, v = d_.vocab, vmt = d_.mt_vocab;
    sdk::Rule& embedding =
        rules.Add()
            .From("model.embed_tokens.weight", {v, e}, {Axis::kVocab, Axis::kEmbed})
            .To("token_embedder.embedding", {vmt, e}, {Axis::kVocab, Axis::kEmbed});
    if (vmt != v) embedding.Then(sdk::Pad(0, vmt));
    rules.Add()
        .From("model.norm.weight", {e}, {Axis::kEmbed})
        .To("decoder.decoder_norm.scale", {e}, {Axis::kEmbed});
    if (d_.tied) {
      rules.Ignore(sdk::Side::kHf, "lm_head.weight",
                   "tie_word_embeddings is set: the output layer is the embedding");
      return;
    }
    sdk::Rule& logits =
        rules.Add()
            .From("lm_head.weight", {v, e}, {Axis::kVocab, Axis::kEmbed})
            .To("decoder.logits_dense.kernel", {e, vmt}, {Axis::kEmbed, Axis::kVocab})
            .Then(sdk::Transpose({1, 0}));
    // MaxText itself cannot pad an untied output layer (its reshape fails);
    // padding it like the embedding keeps the two consistent.
    if (vmt != v) logits.Then(sdk::Pad(1, vmt));
  }

  // Adds one rule per tensor: stacked over the layers `hf_start + stride * k`
  // into `mt_prefix` (scanned), or for the one layer the prefixes name.
  void Emit(sdk::RuleSet& rules, const std::vector<LayerTensor>& tensors,
            const std::string& mt_prefix, const std::string& hf_prefix, bool scanned,
            int64_t hf_start, int64_t stride) const {
    const int64_t count = scanned ? (d_.layers - hf_start + stride - 1) / stride : 1;
    for (const LayerTensor& t : tensors) {
      sdk::Rule& rule = rules.Add();
      rule.From(hf_prefix + t.hf, t.hf_dims, t.hf_axes).To(mt_prefix + t.mt, t.mt_dims, t.mt_axes);
      if (t.per_expert) rule.Stack(Axis::kExperts, 0, d_.experts);
      if (scanned) rule.Stack(Axis::kLayers, 1, count, hf_start, stride);
      for (const sdk::Op& op : t.ops) rule.Then(op);
      if (t.keep_f32) rule.KeepF32();
    }
  }

  // qwen2 / qwen3 / qwen3_moe decoder layer.
  std::vector<LayerTensor> DecoderLayer() const {
    const int64_t e = d_.embed, nq = d_.heads, nkv = d_.kv_heads, hd = d_.head_dim;
    std::vector<LayerTensor> t = {
        Same("input_layernorm.weight", "pre_self_attention_layer_norm.scale", e, Axis::kEmbed),
        Same("post_attention_layernorm.weight", "post_self_attention_layer_norm.scale", e,
             Axis::kEmbed),
        Projection("self_attn.q_proj.weight", {nq * hd, e}, {Axis::kFused, Axis::kEmbed},
                   "self_attention.query.kernel", {e, nq, hd},
                   {Axis::kEmbed, Axis::kHeads, Axis::kHeadDim}),
        Projection("self_attn.k_proj.weight", {nkv * hd, e}, {Axis::kFused, Axis::kEmbed},
                   "self_attention.key.kernel", {e, nkv, hd},
                   {Axis::kEmbed, Axis::kKvHeads, Axis::kHeadDim}),
        Projection("self_attn.v_proj.weight", {nkv * hd, e}, {Axis::kFused, Axis::kEmbed},
                   "self_attention.value.kernel", {e, nkv, hd},
                   {Axis::kEmbed, Axis::kKvHeads, Axis::kHeadDim}),
        Projection("self_attn.o_proj.weight", {e, nq * hd}, {Axis::kEmbed, Axis::kFused},
                   "self_attention.out.kernel", {nq, hd, e},
                   {Axis::kHeads, Axis::kHeadDim, Axis::kEmbed}),
    };
    if (d_.family == Family::kQwen2) {
      // MaxText's reshape_bias: [N*D] <-> [N, D], no transpose.
      for (auto [proj, mt, n, axis] :
           {std::tuple<const char*, const char*, int64_t, Axis>{"q", "query", nq, Axis::kHeads},
            {"k", "key", nkv, Axis::kKvHeads},
            {"v", "value", nkv, Axis::kKvHeads}}) {
        t.push_back({std::string("self_attn.") + proj + "_proj.bias",
                     {n * hd},
                     {Axis::kFused},
                     std::string("self_attention.") + mt + ".bias",
                     {n, hd},
                     {axis, Axis::kHeadDim},
                     {sdk::Reshape({n, hd})}});
      }
    } else {
      t.push_back(
          Same("self_attn.q_norm.weight", "self_attention.query_norm.scale", hd, Axis::kHeadDim));
      t.push_back(
          Same("self_attn.k_norm.weight", "self_attention.key_norm.scale", hd, Axis::kHeadDim));
    }
    if (d_.family == Family::kQwen3Moe) {
      const int64_t x = d_.experts, fm = d_.moe_mlp;
      t.push_back(
          Linear("mlp.gate.weight", "moe_block.gate.kernel", x, Axis::kExperts, e, Axis::kEmbed));
      t.push_back(Expert("mlp.experts.{expert}.gate_proj.weight", "moe_block.wi_0", fm, Axis::kMlp,
                         e, Axis::kEmbed));
      t.push_back(Expert("mlp.experts.{expert}.up_proj.weight", "moe_block.wi_1", fm, Axis::kMlp, e,
                         Axis::kEmbed));
      t.push_back(Expert("mlp.experts.{expert}.down_proj.weight", "moe_block.wo", e, Axis::kEmbed,
                         fm, Axis::kMlp));
    } else {
      const int64_t f = d_.mlp;
      t.push_back(
          Linear("mlp.gate_proj.weight", "mlp.wi_0.kernel", f, Axis::kMlp, e, Axis::kEmbed));
      t.push_back(Linear("mlp.up_proj.weight", "mlp.wi_1.kernel", f, Axis::kMlp, e, Axis::kEmbed));
      t.push_back(Linear("mlp.down_proj.weight", "mlp.wo.kernel", e, Axis::kEmbed, f, Axis::kMlp));
    }
    return t;
  }

  // qwen3_next decoder layer: full attention or Gated DeltaNet, then the MoE.
  std::vector<LayerTensor> NextLayer(bool full_attention) const {
    const int64_t e = d_.embed, nq = d_.heads, nkv = d_.kv_heads, hd = d_.head_dim;
    std::vector<LayerTensor> t = {
        Same("input_layernorm.weight", "input_layernorm.scale", e, Axis::kEmbed),
        Same("post_attention_layernorm.weight", "post_attention_layernorm.scale", e, Axis::kEmbed),
    };
    if (full_attention) {
      // The query projection carries the output gate: per head, D query
      // columns then D gate columns (HF views it as [..., Nq, 2D]).
      t.push_back(Projection("self_attn.q_proj.weight", {nq * 2 * hd, e},
                             {Axis::kFused, Axis::kEmbed}, "attention.attention.query.kernel",
                             {e, nq, 2 * hd}, {Axis::kEmbed, Axis::kHeads, Axis::kFused}));
      t.push_back(Projection("self_attn.k_proj.weight", {nkv * hd, e}, {Axis::kFused, Axis::kEmbed},
                             "attention.attention.key.kernel", {e, nkv, hd},
                             {Axis::kEmbed, Axis::kKvHeads, Axis::kHeadDim}));
      t.push_back(Projection("self_attn.v_proj.weight", {nkv * hd, e}, {Axis::kFused, Axis::kEmbed},
                             "attention.attention.value.kernel", {e, nkv, hd},
                             {Axis::kEmbed, Axis::kKvHeads, Axis::kHeadDim}));
      // MaxText keeps this out projection 2-D ([Nq*D, E]) for Qwen3-Next.
      t.push_back(Linear("self_attn.o_proj.weight", "attention.attention.out.kernel", e,
                         Axis::kEmbed, nq * hd, Axis::kFused));
      t.push_back(Same("self_attn.q_norm.weight", "attention.attention.query_norm.scale", hd,
                       Axis::kHeadDim));
      t.push_back(Same("self_attn.k_norm.weight", "attention.attention.key_norm.scale", hd,
                       Axis::kHeadDim));
    } else {
      const int64_t hv = d_.linear_value_heads, conv = d_.conv_dim(), k = d_.conv_kernel;
      // The in-projections keep HF's column order (q, k, v, z grouped per key
      // head); MaxText regroups at run time exactly as HF does.
      t.push_back(Linear("linear_attn.in_proj_qkvz.weight", "attention.in_proj_qkvz.kernel",
                         d_.qkvz_dim(), Axis::kFused, e, Axis::kEmbed));
      t.push_back(Linear("linear_attn.in_proj_ba.weight", "attention.in_proj_ba.kernel", 2 * hv,
                         Axis::kFused, e, Axis::kEmbed));
      // Depthwise conv: torch [C, 1, K] <-> flax [K, 1, C].
      t.push_back({"linear_attn.conv1d.weight",
                   {conv, 1, k},
                   {Axis::kFused, Axis::kOther, Axis::kOther},
                   "attention.conv1d.kernel",
                   {k, 1, conv},
                   {Axis::kOther, Axis::kOther, Axis::kFused},
                   {sdk::Transpose({2, 1, 0})}});
      // The gated-delta-net decay parameters stay float32 (checked 2026-11
      // against AI-Hypercomputer/maxtext e591f30): MaxText declares A_log
      // and dt_bias with weight_dtype (float32 by default) and computes
      // g = -exp(A_log) * softplus(a + dt_bias) in float32 (models/qwen3.py),
      // while its converters round them to --save_dtype
      // (checkpoint_conversion/to_maxtext.py; standalone_scripts/
      // convert_qwen3_next_scanned.py casts them to bfloat16). The serving
      // engines keep A_log in float32 (vLLM PR #37810, SGLang's
      // qwen3_next.py); HF releases differ (Qwen3.5 stores A_log as F32,
      // Qwen3.6 as BF16, vLLM PR #51836). bfloat16's 8 bits would shift a
      // decay applied across thousands of tokens; 2 x Hv values per layer
      // cost nothing.
      t.push_back(Same("linear_attn.A_log", "attention.A_log", hv, Axis::kOther));
      t.back().keep_f32 = true;
      t.push_back(Same("linear_attn.dt_bias", "attention.dt_bias", hv, Axis::kOther));
      t.back().keep_f32 = true;
      t.push_back(Same("linear_attn.norm.weight", "attention.norm.rms_norm.scale",
                       d_.linear_value_dim, Axis::kHeadDim));
      t.push_back(Linear("linear_attn.out_proj.weight", "attention.out_proj.kernel", e,
                         Axis::kEmbed, d_.linear_value_total(), Axis::kFused));
    }
    const int64_t x = d_.experts, fm = d_.moe_mlp;
    t.push_back(Linear("mlp.gate.weight", "mlp.routed_experts.gate.kernel", x, Axis::kExperts, e,
                       Axis::kEmbed));
    t.push_back(Expert("mlp.experts.{expert}.gate_proj.weight", "mlp.routed_experts.wi_0", fm,
                       Axis::kMlp, e, Axis::kEmbed));
    t.push_back(Expert("mlp.experts.{expert}.up_proj.weight", "mlp.routed_experts.wi_1", fm,
                       Axis::kMlp, e, Axis::kEmbed));
    t.push_back(Expert("mlp.experts.{expert}.down_proj.weight", "mlp.routed_experts.wo", e,
                       Axis::kEmbed, fm, Axis::kMlp));
    t.push_back(Linear("mlp.shared_expert.gate_proj.weight", "mlp.shared_expert.wi_0.kernel", fm,
                       Axis::kMlp, e, Axis::kEmbed));
    t.push_back(Linear("mlp.shared_expert.up_proj.weight", "mlp.shared_expert.wi_1.kernel", fm,
                       Axis::kMlp, e, Axis::kEmbed));
    t.push_back(Linear("mlp.shared_expert.down_proj.weight", "mlp.shared_expert.wo.kernel", e,
                       Axis::kEmbed, fm, Axis::kMlp));
    t.push_back(Linear("mlp.shared_expert_gate.weight", "mlp.shared_expert_gate.kernel", 1,
                       Axis::kOther, e, Axis::kEmbed));
    return t;
  }

  json config_;
  Dims d_;
};

// ---------------------------------------------------------------------------
// Presets: the HF config.json of MaxText's model names (hf_model_configs.py,
// which follows the published releases).

json Qwen3Dense(int64_t hidden, int64_t mlp, int64_t layers, int64_t heads, bool tied) {
  return {{"architectures", {"Qwen3ForCausalLM"}},
          {"attention_bias", false},
          {"attention_dropout", 0.0},
          {"bos_token_id", 151643},
          {"eos_token_id", 151645},
          {"head_dim", 128},
          {"hidden_act", "silu"},
          {"hidden_size", hidden},
          {"initializer_range", 0.02},
          {"intermediate_size", mlp},
          {"max_position_embeddings", 40960},
          {"max_window_layers", layers},
          {"model_type", "qwen3"},
          {"num_attention_heads", heads},
          {"num_hidden_layers", layers},
          {"num_key_value_heads", 8},
          {"rms_norm_eps", 1e-6},
          {"rope_scaling", nullptr},
          {"rope_theta", 1000000.0},
          {"sliding_window", nullptr},
          {"tie_word_embeddings", tied},
          {"torch_dtype", "bfloat16"},
          {"use_cache", true},
          {"use_sliding_window", false},
          {"vocab_size", 151936}};
}

// The base (pre-trained) releases stop at their own end-of-text token and
// were trained to 32k positions.
json Base(json c) {
  c["eos_token_id"] = 151643;
  c["max_position_embeddings"] = 32768;
  return c;
}

json Qwen25(int64_t vocab, int64_t hidden, int64_t mlp, int64_t layers, int64_t heads, int64_t kv,
            bool tied) {
  return {{"architectures", {"Qwen2ForCausalLM"}},
          {"attention_dropout", 0.0},
          {"bos_token_id", 151643},
          {"eos_token_id", 151645},
          {"hidden_act", "silu"},
          {"hidden_size", hidden},
          {"initializer_range", 0.02},
          {"intermediate_size", mlp},
          {"max_position_embeddings", 32768},
          {"model_type", "qwen2"},
          {"num_attention_heads", heads},
          {"num_hidden_layers", layers},
          {"num_key_value_heads", kv},
          {"rms_norm_eps", 1e-6},
          {"rope_theta", 1000000.0},
          {"tie_word_embeddings", tied},
          {"torch_dtype", "bfloat16"},
          {"use_cache", true},
          {"use_sliding_window", false},
          {"vocab_size", vocab}};
}

json Qwen3Moe(int64_t hidden, int64_t mlp, int64_t moe_mlp, int64_t layers, int64_t heads,
              int64_t kv, int64_t experts, double rope_theta, int64_t max_positions) {
  return {{"architectures", {"Qwen3MoeForCausalLM"}},
          {"attention_bias", false},
          {"attention_dropout", 0.0},
          {"bos_token_id", 151643},
          {"decoder_sparse_step", 1},
          {"eos_token_id", 151645},
          {"head_dim", 128},
          {"hidden_act", "silu"},
          {"hidden_size", hidden},
          {"initializer_range", 0.02},
          {"intermediate_size", mlp},
          {"max_position_embeddings", max_positions},
          {"max_window_layers", layers},
          {"mlp_only_layers", json::array()},
          {"model_type", "qwen3_moe"},
          {"moe_intermediate_size", moe_mlp},
          {"norm_topk_prob", true},
          {"num_attention_heads", heads},
          {"num_experts", experts},
          {"num_experts_per_tok", 8},
          {"num_hidden_layers", layers},
          {"num_key_value_heads", kv},
          {"output_router_logits", false},
          {"rms_norm_eps", 1e-6},
          {"rope_scaling", nullptr},
          {"rope_theta", rope_theta},
          {"router_aux_loss_coef", 0.001},
          {"sliding_window", nullptr},
          {"tie_word_embeddings", false},
          {"torch_dtype", "bfloat16"},
          {"use_cache", true},
          {"use_sliding_window", false},
          {"vocab_size", 151936}};
}

const std::map<std::string, json, std::less<>>& Presets() {
  static const std::map<std::string, json, std::less<>> presets = [] {
    std::map<std::string, json, std::less<>> p;
    p["qwen2.5-1.5b"] = Qwen25(151936, 1536, 8960, 28, 12, 2, true);
    p["qwen2.5-7b"] = Qwen25(152064, 3584, 18944, 28, 28, 4, false);
    p["qwen2.5-14b"] = Qwen25(152064, 5120, 13824, 48, 40, 8, false);
    p["qwen3-0.6b"] = Qwen3Dense(1024, 3072, 28, 16, true);
    p["qwen3-1.7b"] = Qwen3Dense(2048, 6144, 28, 16, true);
    p["qwen3-1.7b-base"] = Base(p["qwen3-1.7b"]);
    p["qwen3-4b"] = Qwen3Dense(2560, 9728, 36, 32, true);
    p["qwen3-4b-base"] = Base(p["qwen3-4b"]);
    json thinking = p["qwen3-4b"];
    thinking["rope_theta"] = 5000000.0;
    thinking["max_position_embeddings"] = 262144;
    p["qwen3-4b-thinking-2507"] = thinking;
    p["qwen3-8b"] = Qwen3Dense(4096, 12288, 36, 32, false);
    p["qwen3-8b-base"] = Base(p["qwen3-8b"]);
    p["qwen3-14b"] = Qwen3Dense(5120, 17408, 40, 40, false);
    p["qwen3-14b-base"] = Base(p["qwen3-14b"]);
    p["qwen3-32b"] = Qwen3Dense(5120, 25600, 64, 64, false);
    // MaxText's qwen3-30b-a3b and qwen3-235b-a22b are the Thinking-2507
    // releases; -base is Qwen3-30B-A3B-Base.
    p["qwen3-30b-a3b"] = Qwen3Moe(2048, 6144, 768, 48, 32, 4, 128, 10000000.0, 262144);
    json base = Qwen3Moe(2048, 6144, 768, 48, 32, 4, 128, 1000000.0, 32768);
    base["eos_token_id"] = 151643;
    p["qwen3-30b-a3b-base"] = base;
    p["qwen3-235b-a22b"] = Qwen3Moe(4096, 12288, 1536, 94, 64, 4, 128, 5000000.0, 262144);
    // Qwen3-Coder-480B-A35B; MaxText names it both ways (configs/models says
    // qwen3-480b-a35b, the conversion maps qwen3-coder-480b-a35b).
    json coder = Qwen3Moe(6144, 8192, 2560, 62, 96, 8, 160, 10000000.0, 262144);
    coder["router_aux_loss_coef"] = 0.0;
    coder.erase("bos_token_id");
    p["qwen3-480b-a35b"] = coder;
    p["qwen3-coder-480b-a35b"] = coder;
    p["qwen3-next-80b-a3b"] = {{"architectures", {"Qwen3NextForCausalLM"}},
                               {"attention_bias", false},
                               {"attention_dropout", 0.0},
                               {"bos_token_id", 151643},
                               {"decoder_sparse_step", 1},
                               {"eos_token_id", 151645},
                               {"full_attention_interval", 4},
                               {"head_dim", 256},
                               {"hidden_act", "silu"},
                               {"hidden_size", 2048},
                               {"initializer_range", 0.02},
                               {"intermediate_size", 5120},
                               {"linear_conv_kernel_dim", 4},
                               {"linear_key_head_dim", 128},
                               {"linear_num_key_heads", 16},
                               {"linear_num_value_heads", 32},
                               {"linear_value_head_dim", 128},
                               {"max_position_embeddings", 262144},
                               {"mlp_only_layers", json::array()},
                               {"model_type", "qwen3_next"},
                               {"moe_intermediate_size", 512},
                               {"norm_topk_prob", true},
                               {"num_attention_heads", 16},
                               {"num_experts", 512},
                               {"num_experts_per_tok", 10},
                               {"num_hidden_layers", 48},
                               {"num_key_value_heads", 2},
                               {"output_router_logits", false},
                               {"partial_rotary_factor", 0.25},
                               {"rms_norm_eps", 1e-6},
                               {"rope_scaling", nullptr},
                               {"rope_theta", 10000000.0},
                               {"router_aux_loss_coef", 0.001},
                               {"shared_expert_intermediate_size", 512},
                               {"tie_word_embeddings", false},
                               {"torch_dtype", "bfloat16"},
                               {"use_cache", true},
                               {"vocab_size", 151936}};
    return p;
  }();
  return presets;
}

json Preset(std::string_view name) {
  const auto& presets = Presets();
  auto it = presets.find(name);
  if (it == presets.end()) sdk::Fail(CKB_NOT_FOUND, "unknown model '" + std::string(name) + "'");
  return it->second;
}

// Tiny configs for `ckptbridge plugins check`: one per model type, plus the
// variants that take other rules (tied output, padded vocabulary).
std::vector<sdk::SampleConfig> Samples() {
  json qwen3 = {{"model_type", "qwen3"},       {"vocab_size", 50},
                {"hidden_size", 36},           {"intermediate_size", 44},
                {"num_hidden_layers", 2},      {"num_attention_heads", 6},
                {"num_key_value_heads", 2},    {"head_dim", 10},
                {"rms_norm_eps", 1e-6},        {"rope_theta", 1000000.0},
                {"tie_word_embeddings", true}, {"torch_dtype", "bfloat16"}};
  json qwen3_padded = qwen3;
  qwen3_padded["tie_word_embeddings"] = false;
  qwen3_padded["vocab_size"] = 46;
  qwen3_padded["maxtext_vocab_size"] = 64;
  json qwen2 = {
      {"model_type", "qwen2"},        {"vocab_size", 44},         {"hidden_size", 32},
      {"intermediate_size", 40},      {"num_hidden_layers", 2},   {"num_attention_heads", 4},
      {"num_key_value_heads", 2},     {"rms_norm_eps", 1e-6},     {"rope_theta", 1000000.0},
      {"tie_word_embeddings", false}, {"torch_dtype", "bfloat16"}};
  json moe = {{"model_type", "qwen3_moe"},
              {"vocab_size", 56},
              {"hidden_size", 40},
              {"intermediate_size", 52},
              {"moe_intermediate_size", 20},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"head_dim", 12},
              {"num_experts", 4},
              {"num_experts_per_tok", 2},
              {"norm_topk_prob", true},
              {"decoder_sparse_step", 1},
              {"mlp_only_layers", json::array()},
              {"tie_word_embeddings", false},
              {"torch_dtype", "bfloat16"}};
  json next = {{"model_type", "qwen3_next"},
               {"vocab_size", 72},
               {"hidden_size", 48},
               {"intermediate_size", 60},
               {"num_hidden_layers", 4},
               {"full_attention_interval", 4},
               {"num_attention_heads", 6},
               {"num_key_value_heads", 2},
               {"head_dim", 16},
               {"linear_num_key_heads", 2},
               {"linear_key_head_dim", 12},
               {"linear_num_value_heads", 4},
               {"linear_value_head_dim", 14},
               {"linear_conv_kernel_dim", 3},
               {"num_experts", 5},
               {"num_experts_per_tok", 2},
               {"moe_intermediate_size", 18},
               {"shared_expert_intermediate_size", 18},
               {"partial_rotary_factor", 0.25},
               {"decoder_sparse_step", 1},
               {"mlp_only_layers", json::array()},
               {"tie_word_embeddings", false},
               {"torch_dtype", "bfloat16"}};
  return {{"qwen3", "tied", qwen3},
          {"qwen3", "padded-vocab", qwen3_padded},
          {"qwen2", "base", qwen2},
          {"qwen3_moe", "moe", moe},
          {"qwen3_next", "hybrid", next}};
}

sdk::PluginDefinition Describe() {
  sdk::PluginDefinition d;
  d.name = "qwen";
  d.version = CKPTBRIDGE_PLUGIN_VERSION;
  d.description =
      "Qwen3 dense, Qwen3-MoE, Qwen3-Next and Qwen2.5 (MaxText decoder blocks qwen3, qwen3_moe, "
      "qwen3_next, qwen2)";
  for (const FamilyInfo& info : kFamilies) {
    d.model_types.emplace_back(info.model_type);
    d.architectures.emplace_back(info.architecture);
  }
  for (const auto& [name, config] : Presets()) d.model_presets.push_back(name);
  d.flags = CKB_PLUGIN_THREAD_SAFE_ADAPTERS;
  d.abi_minor = 2;  // Rule::KeepF32 (CKB_RULE_KEEP_F32)
  d.create = [](std::string_view model_type, const sdk::Config& config) {
    return std::make_unique<QwenAdapter>(model_type, config);
  };
  d.preset = &Preset;
  d.samples = Samples();
  return d;
}

}  // namespace

CKPTBRIDGE_PLUGIN(Describe)
