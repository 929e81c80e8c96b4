// plugins/deepseek - DeepSeek V2, V3 and V3.2, HF <-> MaxText, reading the
// FP8 releases directly.
//
// The mapping is MaxText's own (checkpoint_conversion/utils/param_mapping.py
// DEEPSEEK_*, hf_shape.py, shared/docs/maxtext-mapping.md §2.2 and §6.9), with
// every dimension read from config.json. Every hook is "reshape_kernel"
// (transpose, then split the output features row-major) or the identity; no
// value changes, no RoPE permutation (MaxText runs DeepSeek with
// rope_interleave: true, matching the released weights).
//
//   HF (model.layers.{i}.)                      MaxText (decoder.dense_layers / moe_layers)
//   input_layernorm / post_attention_layernorm  pre_/post_self_attention_layer_norm.scale
//   self_attn.q_proj [Nq*qk, E]          (V2)   self_attention.query.kernel [E, Nq, qk]
//   self_attn.q_a_proj [q_lora, E]       (V3)   self_attention.wq_a.kernel [E, q_lora]
//   self_attn.q_a_layernorm [q_lora]     (V3)   self_attention.q_norm.scale
//   self_attn.q_b_proj [Nq*qk, q_lora]   (V3)   self_attention.wq_b.kernel [q_lora, Nq, qk]
//   self_attn.kv_a_proj_with_mqa [kv_lora+rope, E]  self_attention.wkv_a.kernel [E, kv_lora+rope]
//   self_attn.kv_a_layernorm [kv_lora]          self_attention.kv_norm.scale
//   self_attn.kv_b_proj [Nq*(nope+v), kv_lora]  self_attention.wkv_b.kernel [kv_lora, Nq, nope+v]
//   self_attn.o_proj [E, Nq*v]                  self_attention.out.kernel [Nq, v, E]
//   self_attn.indexer.wq_b [Hi*Di, q_lora] (V3.2)  self_attention.indexer.wq_b.kernel [q_lora, Hi,
//   Di] self_attn.indexer.wk [Di, E]                self_attention.indexer.wk.kernel [E, Di]
//   self_attn.indexer.k_norm.weight/.bias [Di]  self_attention.indexer.k_norm.scale/.bias
//   self_attn.indexer.weights_proj [Hi, E]      self_attention.indexer.weights_proj.kernel [E, Hi]
//   dense layers (i < first_k_dense_replace):
//   mlp.gate_proj/up_proj [F, E], down_proj     mlp.wi_0/wi_1.kernel [E, F], mlp.wo.kernel [F, E]
//   MoE layers (DeepSeekMoeBlock_0.):
//   mlp.shared_experts.gate/up/down_proj        shared_experts.wi_0/wi_1/wo.kernel [E, S*Fm] /
//   [S*Fm, E] mlp.gate.weight [X, E]                      MoeBlock_0.gate.kernel [E, X]
//   mlp.gate.e_score_correction_bias [X] (V3)   MoeBlock_0.gate.bias [X]
//   mlp.experts.{e}.gate/up_proj [Fm, E]        MoeBlock_0.wi_0/wi_1 [X, E, Fm]
//   mlp.experts.{e}.down_proj [E, Fm]           MoeBlock_0.wo [X, Fm, E]
//
// Scanned: the layer axis is 1 in every tensor (after the expert axis), one
// stack for dense_layers (HF layers [0, first_k)) and one for moe_layers
// ([first_k, L)). Unscanned: dense_layers_{i} and moe_layers_{i - first_k}.
//
// Multi-token prediction (model.layers.{L..L+n-1}, n = num_nextn_predict_layers):
// MaxText's generic converter maps none, so by default they are declared
// known-and-skipped (the host prints the count). MaxText does define a
// parameter layout for them (layers/multi_token_prediction.py, and the
// standalone convert_deepseek_family_ckpt.py --enable_mtp maps layer 61 to
// it), so with --mtp layer L+k-1 becomes mtp_block.mtp_layer_{k}.mtp_{k}_*:
// enorm -> embedding_norm, hnorm -> hidden_state_norm, eh_proj -> projection
// (kernel [2E, E]), the rest -> transformer_layer (a MoE layer, unstacked).
// Its embed_tokens and shared_head.head are copies of the main model's, and
// MaxText's MTP block applies the main decoder_norm instead of
// shared_head.norm; on export these three are written from the main model's
// tensors.
//
// FP8 releases (quantization_config.quant_method "fp8", e4m3 weights with an
// f32 weight_scale_inv per weight_block_size block): every weight DeepSeek's
// reference code quantizes (its inference `Linear` layers: attention
// projections, MLPs, experts, shared experts, the V3.2 indexer's wq_b and wk)
// is read with its scale and dequantized in the conversion by a custom
// transform, exactly as DeepSeek's weight_dequant defines it:
//   W[i][j] = f32(W_fp8[i][j]) * S[i / block_rows][j / block_cols]
// (partial blocks at the edges; IEEE f32 arithmetic, so the e4m3 NaN codes
// propagate). The host rounds once to --save-dtype. A NaN or infinite scale
// is refused, naming its block: no quantizer writes one (DeepSeek's and
// transformers' write amax / 448 per block, finite and >= 0), and multiplied
// in it would turn the whole block into NaNs and infinities without a word.
// Finite scales are applied as the definition says, whatever their sign:
// zero is what a quantizer writes for an all-zero block, and a negative one,
// which none writes, is multiplied in as DeepSeek's weight_dequant and
// transformers' dequantization do.
// Export always writes unquantized weights and a config without
// quantization_config.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "ckptbridge/sdk/plugin.hpp"

namespace {

namespace sdk = ckptbridge::sdk;
using nlohmann::json;
using sdk::Axis;

// Custom transform ids.
constexpr int32_t kDequantFp8 = 1;

// Everything the mapping needs, read once from config.json.
struct Dims {
  int64_t vocab = 0;
  int64_t embed = 0;
  int64_t mlp = 0;      // dense MLP width (intermediate_size)
  int64_t moe_mlp = 0;  // one expert's width (moe_intermediate_size)
  int64_t layers = 0;   // main decoder layers, without MTP
  int64_t first_dense = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t q_lora = 0;  // 0: no query compression (V2-Lite's q_proj)
  int64_t kv_lora = 0;
  int64_t nope = 0;
  int64_t rope = 0;
  int64_t v = 0;
  int64_t experts = 0;
  int64_t experts_per_token = 0;
  int64_t shared = 0;
  bool router_bias = false;
  bool indexer = false;
  int64_t index_heads = 0;
  int64_t index_dim = 0;
  int64_t mtp_layers = 0;
  bool tied = false;
  // FP8 block quantization of the source.
  bool fp8 = false;
  int64_t block_rows = 128;
  int64_t block_cols = 128;

  int64_t qk() const { return nope + rope; }
  int64_t moe_layers() const { return layers - first_dense; }
};

std::string Num(int64_t v) { return std::to_string(v); }

// Reads quantization_config: FP8 block quantization is converted, anything
// else is refused with the reason and the way out.
void ReadQuantization(const sdk::Config& c, Dims& d) {
  if (c.Has("quantization")) {
    sdk::Fail(CKB_UNSUPPORTED,
              "this checkpoint holds MLX-quantized weights (config.json 'quantization'): packed "
              "integers and scales, not the original weights; convert the original release, or "
              "dequantize it first (mlx_lm.convert --dequantize)");
  }
  if (!c.Has("quantization_config")) return;
  const sdk::Config q = c.Object("quantization_config");
  const std::string method = q.String("quant_method", "unknown");
  if (method != "fp8") {
    sdk::Fail(CKB_UNSUPPORTED, "config.json: quantization_config.quant_method '" + method +
                                   "' is not converted by the deepseek plugin (it reads the "
                                   "original fp8 releases and unquantized checkpoints)");
  }
  const std::string fmt = q.String("fmt", "e4m3");
  if (fmt != "e4m3") {
    sdk::Fail(CKB_UNSUPPORTED, "config.json: quantization_config.fmt '" + fmt +
                                   "' is not converted; DeepSeek's fp8 releases use e4m3");
  }
  if (!q.Has("weight_block_size")) {
    sdk::Fail(CKB_UNSUPPORTED,
              "config.json: quantization_config has no weight_block_size; only block-wise fp8 "
              "(a weight_scale_inv per block, as DeepSeek releases it) is converted");
  }
  const json& block = q.json().at("weight_block_size");
  if (!block.is_array() || block.size() != 2 || !block[0].is_number_integer() ||
      !block[1].is_number_integer() || block[0].get<int64_t>() <= 0 ||
      block[1].get<int64_t>() <= 0) {
    sdk::Fail(CKB_INVALID_ARGUMENT,
              "config.json: quantization_config.weight_block_size must be two positive integers, "
              "got " +
                  block.dump());
  }
  d.fp8 = true;
  d.block_rows = block[0].get<int64_t>();
  d.block_cols = block[1].get<int64_t>();
}

Dims ReadDims(std::string_view model_type, const sdk::Config& c) {
  Dims d;
  ReadQuantization(c, d);
  d.vocab = c.Dim("vocab_size");
  d.embed = c.Dim("hidden_size");
  d.layers = c.Dim("num_hidden_layers");
  d.heads = c.Dim("num_attention_heads");
  d.kv_heads = c.Has("num_key_value_heads") ? c.Dim("num_key_value_heads") : d.heads;
  d.first_dense = c.Int("first_k_dense_replace", 0);
  if (d.first_dense < 0 || d.first_dense > d.layers) {
    sdk::Fail(CKB_INVALID_ARGUMENT, "config.json: first_k_dense_replace " + Num(d.first_dense) +
                                        " is outside [0, num_hidden_layers " + Num(d.layers) + "]");
  }
  // MaxText's DeepSeek decoder has exactly two groups: dense, then MoE.
  const int64_t freq = c.Int("moe_layer_freq", 1);
  if (freq != 1) {
    sdk::Fail(CKB_UNSUPPORTED, "config.json: moe_layer_freq " + Num(freq) +
                                   ": MaxText's DeepSeek decoder makes every layer after "
                                   "first_k_dense_replace a MoE layer (moe_layer_freq 1)");
  }
  if (c.Bool("attention_bias", false)) {
    sdk::Fail(CKB_UNSUPPORTED,
              "config.json: attention_bias is set, but MaxText's MLA attention has no bias "
              "parameters");
  }
  d.q_lora = c.Int("q_lora_rank", 0);
  if (d.q_lora < 0) {
    sdk::Fail(CKB_INVALID_ARGUMENT,
              "config.json: 'q_lora_rank' must not be negative, got " + Num(d.q_lora));
  }
  d.kv_lora = c.Dim("kv_lora_rank");
  d.nope = c.Dim("qk_nope_head_dim");
  d.rope = c.Dim("qk_rope_head_dim");
  d.v = c.Dim("v_head_dim");
  if (c.Has("qk_head_dim") && c.Int("qk_head_dim") != d.qk()) {
    sdk::Fail(CKB_INVALID_ARGUMENT, "config.json: qk_head_dim " + Num(c.Int("qk_head_dim")) +
                                        " is not qk_nope_head_dim " + Num(d.nope) +
                                        " + qk_rope_head_dim " + Num(d.rope));
  }
  if (d.first_dense > 0) d.mlp = c.Dim("intermediate_size");
  if (d.moe_layers() > 0) {
    d.experts = c.Dim("n_routed_experts");
    d.moe_mlp = c.Dim("moe_intermediate_size");
    d.experts_per_token = c.Dim("num_experts_per_tok");
    d.shared = c.Int("n_shared_experts", 0);
    if (d.shared < 0) {
      sdk::Fail(CKB_INVALID_ARGUMENT,
                "config.json: 'n_shared_experts' must not be negative, got " + Num(d.shared));
    }
  }
  // V3's noaux_tc routing adds e_score_correction_bias to the router; V2's
  // greedy / group-limited routing has none.
  const std::string topk_method = c.String("topk_method", "");
  d.router_bias = topk_method.empty() ? model_type != "deepseek_v2" : topk_method == "noaux_tc";
  // The V3.2 indexer, exactly when MaxText's HF shape table has it.
  d.indexer = c.Has("index_n_heads") && c.Has("index_head_dim") && d.q_lora > 0;
  if (d.indexer) {
    d.index_heads = c.Dim("index_n_heads");
    d.index_dim = c.Dim("index_head_dim");
  }
  d.mtp_layers = c.Int("num_nextn_predict_layers", 0);
  if (d.mtp_layers < 0) {
    sdk::Fail(
        CKB_INVALID_ARGUMENT,
        "config.json: 'num_nextn_predict_layers' must not be negative, got " + Num(d.mtp_layers));
  }
  d.tied = c.Bool("tie_word_embeddings", false);
  return d;
}

// One per-layer mapping, expanded for scanned or unscanned output.
struct LayerTensor {
  std::string hf_suffix;  // after "model.layers.{i}."
  sdk::Dims hf_dims;
  sdk::Axes hf_axes;
  std::string mt_suffix;  // after the layer container
  sdk::Dims mt_dims;      // one layer, one expert
  sdk::Axes mt_axes;
  std::vector<sdk::Op> ops;
  bool per_expert = false;  // `{expert}` in hf_suffix, stacked on MaxText axis 0
  bool fp8 = false;         // quantized in DeepSeek's fp8 releases
};

// MaxText's reshape_kernel: transpose the HF [out, in] matrix, then reshape
// row-major to the MaxText shape (splitting heads from head dims).
std::vector<sdk::Op> Kernel(const sdk::Dims& mt_dims) {
  if (mt_dims.size() == 2) return {sdk::Transpose({1, 0})};
  return {sdk::Transpose({1, 0}), sdk::Reshape(mt_dims)};
}

LayerTensor Norm(std::string hf, std::string mt, int64_t n, Axis axis) {
  return {std::move(hf), {n}, {axis}, std::move(mt), {n}, {axis}, {}};
}

LayerTensor Linear(std::string hf, std::string mt, int64_t out, int64_t in, sdk::Axes hf_axes,
                   sdk::Dims mt_dims, sdk::Axes mt_axes, bool fp8) {
  LayerTensor t{std::move(hf), {out, in}, std::move(hf_axes), std::move(mt),
                mt_dims,       mt_axes,   Kernel(mt_dims)};
  t.fp8 = fp8;
  return t;
}

// A rule group: one MaxText container and the HF layers it holds.
struct Group {
  std::string container;  // "dense_layers", "moe_layers"
  int64_t hf_start = 0;
  int64_t count = 0;
  bool dense = false;
};

class DeepSeekAdapter final : public sdk::Adapter {
 public:
  DeepSeekAdapter(std::string_view model_type, const sdk::Config& config)
      : model_type_(model_type), config_(config.json()), d_(ReadDims(model_type, config)) {}

  void Rules(const sdk::RuleOptions& options, sdk::RuleSet& rules) const override {
    const bool to_maxtext = options.direction == sdk::Direction::kToMaxText;
    // Scales are read (and dequantized) only from an fp8 source; export writes
    // plain weights.
    const bool dequantize = d_.fp8 && to_maxtext;
    const bool mtp = options.raw.is_object() && options.raw.value("mtp", false);
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
    rules.Ignore(sdk::Side::kHf, "model.layers.*.self_attn.rotary_emb.inv_freq",
                 "RoPE frequencies are recomputed from rope_theta");

    const std::vector<Group> groups = {
        {"dense_layers", 0, d_.first_dense, true},
        {"moe_layers", d_.first_dense, d_.moe_layers(), false},
    };
    for (const Group& g : groups) {
      if (g.count == 0) continue;
      const std::vector<LayerTensor> tensors = LayerTensors(g.dense);
      for (const LayerTensor& t : tensors) {
        if (options.scan_layers) {
          sdk::Rule& rule = rules.Add();
          AddSource(rule, t, "model.layers.{layer}.", dequantize);
          rule.To("decoder." + g.container + "." + t.mt_suffix, t.mt_dims, t.mt_axes);
          if (t.per_expert) rule.Stack(Axis::kExperts, 0, d_.experts);
          rule.Stack(Axis::kLayers, 1, g.count, g.hf_start);
          AddOps(rule, t);
        } else {
          for (int64_t j = 0; j < g.count; ++j) {
            sdk::Rule& rule = rules.Add();
            AddSource(rule, t, "model.layers." + Num(g.hf_start + j) + ".", dequantize);
            rule.To("decoder." + g.container + "_" + Num(j) + "." + t.mt_suffix, t.mt_dims,
                    t.mt_axes);
            if (t.per_expert) rule.Stack(Axis::kExperts, 0, d_.experts);
            AddOps(rule, t);
          }
        }
      }
    }

    for (int64_t k = 1; k <= d_.mtp_layers; ++k) {
      const std::string hf = "model.layers." + Num(d_.layers + k - 1) + ".";
      if (!mtp) {
        rules.Ignore(sdk::Side::kHf, hf + "*",
                     "multi-token-prediction layer: MaxText's converter maps none; --mtp "
                     "converts it to MaxText's mtp_block");
        continue;
      }
      AddMtpLayer(rules, k, hf, to_maxtext, dequantize);
    }
    if (!mtp) {
      rules.Ignore(sdk::Side::kMaxText, "mtp_block.*",
                   "multi-token-prediction block: exported only with --mtp");
    }
  }

  json MaxTextConfig() const override {
    const sdk::Config c(config_);
    json m;
    m["decoder_block"] = "deepseek";
    m["attention_type"] = "mla";
    m["base_emb_dim"] = d_.embed;
    m["base_num_query_heads"] = d_.heads;
    m["base_num_kv_heads"] = d_.kv_heads;
    if (c.Has("intermediate_size")) m["base_mlp_dim"] = c.Int("intermediate_size");
    m["base_num_decoder_layers"] = d_.layers;
    m["first_num_dense_layers"] = d_.first_dense;
    m["mlp_activations"] = {c.String("hidden_act", "silu"), "linear"};
    m["vocab_size"] = d_.vocab;
    m["enable_dropout"] = false;
    m["logits_via_embedding"] = d_.tied;
    // MaxText divides tied logits by sqrt(emb_dim) unless told not to.
    if (d_.tied) m["normalize_embedding_logits"] = false;
    m["normalization_layer_epsilon"] = c.Number("rms_norm_eps", 1e-6);
    if (d_.moe_layers() > 0) {
      m["base_moe_mlp_dim"] = d_.moe_mlp;
      m["num_experts"] = d_.experts;
      m["num_experts_per_tok"] = d_.experts_per_token;
      m["shared_experts"] = d_.shared;
      m["routed_scaling_factor"] = c.Number("routed_scaling_factor", 1.0);
      m["routed_score_func"] = c.String("scoring_func", "softmax");
      m["routed_bias"] = d_.router_bias;
      // DeepSeek's device-limited routing; MaxText's deepseek3 yml asks for
      // these on the command line ("please set n_routing_groups=8 and
      // topk_routing_group=4").
      const int64_t groups = c.Int("n_group", 1);
      if (groups > 1) {
        m["n_routing_groups"] = groups;
        m["topk_routing_group"] = c.Int("topk_group", groups);
      }
    }
    m["q_lora_rank"] = d_.q_lora;
    m["kv_lora_rank"] = d_.kv_lora;
    m["qk_nope_head_dim"] = d_.nope;
    m["qk_rope_head_dim"] = d_.rope;
    m["v_head_dim"] = d_.v;
    // transformers 5 moves rope_theta and the scaling into rope_parameters.
    const char* rope_key = c.Has("rope_parameters") ? "rope_parameters" : "rope_scaling";
    const bool rope_object = c.Has(rope_key) && config_.at(rope_key).is_object();
    double theta = c.Number("rope_theta", 10000.0);
    if (rope_object && c.Has("rope_parameters")) {
      theta = c.Object(rope_key).Number("rope_theta", theta);
    }
    m["rope_max_timescale"] = theta;
    if (c.Has("max_position_embeddings")) {
      m["max_position_embeddings"] = c.Int("max_position_embeddings");
    }
    std::string rope_type = "default";
    if (rope_object) {
      const sdk::Config rs = c.Object(rope_key);
      rope_type = rs.String("rope_type", rs.String("type", "default"));
      if (rope_type == "yarn") {
        m["original_max_position_embeddings"] = rs.Int("original_max_position_embeddings", 4096);
        m["rope_factor"] = rs.Number("factor", 40.0);
        m["beta_fast"] = rs.Number("beta_fast", 32.0);
        m["beta_slow"] = rs.Number("beta_slow", 1.0);
        m["mscale"] = rs.Number("mscale", 1.0);
      }
    }
    m["rope_type"] = rope_type == "yarn" ? "yarn" : "default";
    // The released weights hold the rope columns of q/k in adjacent pairs.
    m["rope_interleave"] = true;
    m["rope_truncate"] = true;
    m["rope_attention_scaling"] = false;
    if (d_.indexer) {
      m["use_indexer"] = true;
      m["indexer_n_heads"] = d_.index_heads;
      m["indexer_head_dim"] = d_.index_dim;
      m["indexer_topk"] = c.Int("index_topk", 2048);
    }
    return m;
  }

  json HfConfig() const override {
    json out = config_;
    // Export writes unquantized weights.
    out.erase("quantization_config");
    // Kept as the source says (a DeepseekV3ForCausalLM checkpoint may carry
    // another model_type).
    if (!out.contains("model_type")) out["model_type"] = model_type_;
    if (!out.contains("architectures")) out["architectures"] = {ArchitectureOf(model_type_)};
    return out;
  }

  void ApplyCustom(int32_t id, const std::vector<sdk::TensorView>& inputs,
                   const std::vector<sdk::TensorView>& outputs) const override {
    if (id != kDequantFp8) sdk::Fail(CKB_NOT_FOUND, "unknown custom transform " + Num(id));
    DequantizeBlocks(inputs, outputs);
  }

 private:
  static const char* ArchitectureOf(const std::string& model_type) {
    if (model_type == "deepseek_v2") return "DeepseekV2ForCausalLM";
    if (model_type == "deepseek_v32") return "DeepseekV32ForCausalLM";
    return "DeepseekV3ForCausalLM";
  }

  int64_t ScaleBlocks(int64_t n, int64_t block) const { return (n + block - 1) / block; }

  // The HF inputs of one rule: the weight alone, or the fp8 weight and its
  // block scales joined by the dequantization transform.
  void AddSource(sdk::Rule& rule, const LayerTensor& t, const std::string& prefix,
                 bool dequantize) const {
    rule.From(prefix + t.hf_suffix, t.hf_dims, t.hf_axes);
    if (dequantize && t.fp8) {
      rule.From(
          prefix + t.hf_suffix + "_scale_inv",
          {ScaleBlocks(t.hf_dims[0], d_.block_rows), ScaleBlocks(t.hf_dims[1], d_.block_cols)},
          {Axis::kOther, Axis::kOther});
      rule.Then(sdk::Custom(kDequantFp8, t.hf_dims));
      rule.Lossy();
    }
  }

  static void AddOps(sdk::Rule& rule, const LayerTensor& t) {
    for (const sdk::Op& op : t.ops) rule.Then(op);
  }

  // One MTP layer: MaxText's MultiTokenPredictionLayer `k` around a MoE
  // decoder layer, unstacked.
  void AddMtpLayer(sdk::RuleSet& rules, int64_t k, const std::string& hf, bool to_maxtext,
                   bool dequantize) const {
    const int64_t e = d_.embed;
    const std::string mt = "mtp_block.mtp_layer_" + Num(k) + ".mtp_" + Num(k) + "_";
    rules.Add()
        .From(hf + "enorm.weight", {e}, {Axis::kEmbed})
        .To(mt + "embedding_norm.scale", {e}, {Axis::kEmbed});
    rules.Add()
        .From(hf + "hnorm.weight", {e}, {Axis::kEmbed})
        .To(mt + "hidden_state_norm.scale", {e}, {Axis::kEmbed});
    // eh_proj takes concat(enorm(embedding), hnorm(hidden)), as MaxText's
    // projection does; DeepSeek keeps it unquantized.
    rules.Add()
        .From(hf + "eh_proj.weight", {e, 2 * e}, {Axis::kEmbed, Axis::kFused})
        .To(mt + "projection.kernel", {2 * e, e}, {Axis::kFused, Axis::kEmbed})
        .Then(sdk::Transpose({1, 0}));
    for (const LayerTensor& t : LayerTensors(/*dense=*/d_.moe_layers() == 0)) {
      sdk::Rule& rule = rules.Add();
      AddSource(rule, t, hf, dequantize);
      rule.To(mt + "transformer_layer." + t.mt_suffix, t.mt_dims, t.mt_axes);
      if (t.per_expert) rule.Stack(Axis::kExperts, 0, d_.experts);
      AddOps(rule, t);
    }
    if (to_maxtext) {
      rules.Ignore(sdk::Side::kHf, hf + "embed_tokens.weight",
                   "multi-token-prediction copy of the embedding: MaxText's mtp_block shares "
                   "token_embedder");
      rules.Ignore(sdk::Side::kHf, hf + "shared_head.head.weight",
                   "multi-token-prediction copy of the output layer: MaxText's mtp_block shares "
                   "the decoder's");
      rules.Ignore(sdk::Side::kHf, hf + "shared_head.norm.weight",
                   "multi-token-prediction final norm: MaxText's mtp_block applies the "
                   "decoder's decoder_norm instead, so this one has no MaxText parameter");
    } else {
      // The HF layout repeats the shared tensors in every MTP layer; write the
      // ones MaxText's MTP block used.
      rules.Add()
          .From(hf + "embed_tokens.weight", {d_.vocab, e}, {Axis::kVocab, Axis::kEmbed})
          .To("token_embedder.embedding", {d_.vocab, e}, {Axis::kVocab, Axis::kEmbed});
      if (d_.tied) {
        rules.Add()
            .From(hf + "shared_head.head.weight", {d_.vocab, e}, {Axis::kVocab, Axis::kEmbed})
            .To("token_embedder.embedding", {d_.vocab, e}, {Axis::kVocab, Axis::kEmbed});
      } else {
        rules.Add()
            .From(hf + "shared_head.head.weight", {d_.vocab, e}, {Axis::kVocab, Axis::kEmbed})
            .To("decoder.logits_dense.kernel", {e, d_.vocab}, {Axis::kEmbed, Axis::kVocab})
            .Then(sdk::Transpose({1, 0}));
      }
      rules.Add()
          .From(hf + "shared_head.norm.weight", {e}, {Axis::kEmbed})
          .To("decoder.decoder_norm.scale", {e}, {Axis::kEmbed});
    }
  }

  std::vector<LayerTensor> LayerTensors(bool dense) const {
    const int64_t e = d_.embed, nq = d_.heads, qk = d_.qk(), kv = d_.kv_lora, r = d_.rope;
    const int64_t vd = d_.v, nope = d_.nope;
    std::vector<LayerTensor> t = {
        Norm("input_layernorm.weight", "pre_self_attention_layer_norm.scale", e, Axis::kEmbed),
        Norm("post_attention_layernorm.weight", "post_self_attention_layer_norm.scale", e,
             Axis::kEmbed),
    };
    if (d_.q_lora == 0) {
      t.push_back(Linear("self_attn.q_proj.weight", "self_attention.query.kernel", nq * qk, e,
                         {Axis::kFused, Axis::kEmbed}, {e, nq, qk},
                         {Axis::kEmbed, Axis::kHeads, Axis::kHeadDim}, true));
    } else {
      const int64_t ql = d_.q_lora;
      t.push_back(Linear("self_attn.q_a_proj.weight", "self_attention.wq_a.kernel", ql, e,
                         {Axis::kOther, Axis::kEmbed}, {e, ql}, {Axis::kEmbed, Axis::kOther},
                         true));
      t.push_back(
          Norm("self_attn.q_a_layernorm.weight", "self_attention.q_norm.scale", ql, Axis::kOther));
      t.push_back(Linear("self_attn.q_b_proj.weight", "self_attention.wq_b.kernel", nq * qk, ql,
                         {Axis::kFused, Axis::kOther}, {ql, nq, qk},
                         {Axis::kOther, Axis::kHeads, Axis::kHeadDim}, true));
    }
    t.push_back(Linear("self_attn.kv_a_proj_with_mqa.weight", "self_attention.wkv_a.kernel", kv + r,
                       e, {Axis::kFused, Axis::kEmbed}, {e, kv + r}, {Axis::kEmbed, Axis::kFused},
                       true));
    t.push_back(
        Norm("self_attn.kv_a_layernorm.weight", "self_attention.kv_norm.scale", kv, Axis::kOther));
    t.push_back(Linear("self_attn.kv_b_proj.weight", "self_attention.wkv_b.kernel",
                       nq * (nope + vd), kv, {Axis::kFused, Axis::kOther}, {kv, nq, nope + vd},
                       {Axis::kOther, Axis::kHeads, Axis::kHeadDim}, true));
    t.push_back(Linear("self_attn.o_proj.weight", "self_attention.out.kernel", e, nq * vd,
                       {Axis::kEmbed, Axis::kFused}, {nq, vd, e},
                       {Axis::kHeads, Axis::kHeadDim, Axis::kEmbed}, true));
    if (d_.indexer) {
      const int64_t hi = d_.index_heads, di = d_.index_dim, ql = d_.q_lora;
      t.push_back(Linear("self_attn.indexer.wq_b.weight", "self_attention.indexer.wq_b.kernel",
                         hi * di, ql, {Axis::kFused, Axis::kOther}, {ql, hi, di},
                         {Axis::kOther, Axis::kHeads, Axis::kHeadDim}, true));
      t.push_back(Linear("self_attn.indexer.wk.weight", "self_attention.indexer.wk.kernel", di, e,
                         {Axis::kHeadDim, Axis::kEmbed}, {e, di}, {Axis::kEmbed, Axis::kHeadDim},
                         true));
      t.push_back(Norm("self_attn.indexer.k_norm.weight", "self_attention.indexer.k_norm.scale", di,
                       Axis::kHeadDim));
      t.push_back(Norm("self_attn.indexer.k_norm.bias", "self_attention.indexer.k_norm.bias", di,
                       Axis::kHeadDim));
      // DeepSeek stores weights_proj unquantized (bf16).
      t.push_back(Linear(
          "self_attn.indexer.weights_proj.weight", "self_attention.indexer.weights_proj.kernel", hi,
          e, {Axis::kHeads, Axis::kEmbed}, {e, hi}, {Axis::kEmbed, Axis::kHeads}, false));
    }

    if (dense) {
      const int64_t f = d_.mlp;
      t.push_back(Linear("mlp.gate_proj.weight", "mlp.wi_0.kernel", f, e,
                         {Axis::kMlp, Axis::kEmbed}, {e, f}, {Axis::kEmbed, Axis::kMlp}, true));
      t.push_back(Linear("mlp.up_proj.weight", "mlp.wi_1.kernel", f, e, {Axis::kMlp, Axis::kEmbed},
                         {e, f}, {Axis::kEmbed, Axis::kMlp}, true));
      t.push_back(Linear("mlp.down_proj.weight", "mlp.wo.kernel", e, f, {Axis::kEmbed, Axis::kMlp},
                         {f, e}, {Axis::kMlp, Axis::kEmbed}, true));
      return t;
    }

    const int64_t x = d_.experts, fm = d_.moe_mlp, fs = d_.shared * d_.moe_mlp;
    const std::string moe = "DeepSeekMoeBlock_0.";
    if (d_.shared > 0) {
      t.push_back(Linear("mlp.shared_experts.gate_proj.weight", moe + "shared_experts.wi_0.kernel",
                         fs, e, {Axis::kMlp, Axis::kEmbed}, {e, fs}, {Axis::kEmbed, Axis::kMlp},
                         true));
      t.push_back(Linear("mlp.shared_experts.up_proj.weight", moe + "shared_experts.wi_1.kernel",
                         fs, e, {Axis::kMlp, Axis::kEmbed}, {e, fs}, {Axis::kEmbed, Axis::kMlp},
                         true));
      t.push_back(Linear("mlp.shared_experts.down_proj.weight", moe + "shared_experts.wo.kernel", e,
                         fs, {Axis::kEmbed, Axis::kMlp}, {fs, e}, {Axis::kMlp, Axis::kEmbed},
                         true));
    }
    // The router stays unquantized in the fp8 releases (bf16 weight, f32 bias).
    t.push_back(Linear("mlp.gate.weight", moe + "MoeBlock_0.gate.kernel", x, e,
                       {Axis::kExperts, Axis::kEmbed}, {e, x}, {Axis::kEmbed, Axis::kExperts},
                       false));
    if (d_.router_bias) {
      t.push_back(Norm("mlp.gate.e_score_correction_bias", moe + "MoeBlock_0.gate.bias", x,
                       Axis::kExperts));
    }
    for (auto [hf, mt, in_first] :
         {std::tuple<const char*, const char*, bool>{"gate_proj", "wi_0", true},
          {"up_proj", "wi_1", true},
          {"down_proj", "wo", false}}) {
      LayerTensor w = in_first ? Linear(std::string("mlp.experts.{expert}.") + hf + ".weight",
                                        moe + "MoeBlock_0." + mt, fm, e, {Axis::kMlp, Axis::kEmbed},
                                        {e, fm}, {Axis::kEmbed, Axis::kMlp}, true)
                               : Linear(std::string("mlp.experts.{expert}.") + hf + ".weight",
                                        moe + "MoeBlock_0." + mt, e, fm, {Axis::kEmbed, Axis::kMlp},
                                        {fm, e}, {Axis::kMlp, Axis::kEmbed}, true);
      w.per_expert = true;
      t.push_back(std::move(w));
    }
    return t;
  }

  // DeepSeek's weight_dequant: out[i][j] = f32(w[i][j]) * scale[i / bm][j / bn].
  void DequantizeBlocks(const std::vector<sdk::TensorView>& inputs,
                        const std::vector<sdk::TensorView>& outputs) const {
    if (inputs.size() != 2 || outputs.size() != 1) {
      sdk::Fail(CKB_INVALID_ARGUMENT, "fp8 dequantization takes a weight and its scales, got " +
                                          Num(static_cast<int64_t>(inputs.size())) + " inputs");
    }
    const sdk::TensorView& w = inputs[0];
    const sdk::TensorView& s = inputs[1];
    const sdk::TensorView& out = outputs[0];
    if (w.dims.size() != 2 || s.dims.size() != 2 || out.dims != w.dims ||
        out.dtype != CKB_DTYPE_F32) {
      sdk::Fail(CKB_INVALID_ARGUMENT,
                "fp8 dequantization needs a 2-d weight, 2-d scales and an f32 output of the "
                "weight's shape");
    }
    const int64_t rows = w.dims[0], cols = w.dims[1];
    const int64_t srows = ScaleBlocks(rows, d_.block_rows),
                  scols = ScaleBlocks(cols, d_.block_cols);
    if (s.dims[0] != srows || s.dims[1] != scols) {
      sdk::Fail(CKB_INVALID_ARGUMENT, "weight_scale_inv has shape [" + Num(s.dims[0]) + ", " +
                                          Num(s.dims[1]) + "] but a [" + Num(rows) + ", " +
                                          Num(cols) + "] weight in " + Num(d_.block_rows) + "x" +
                                          Num(d_.block_cols) + " blocks needs [" + Num(srows) +
                                          ", " + Num(scols) + "]");
    }
    const std::vector<float> scales = WidenScales(s);
    float* dst = static_cast<float*>(out.data);
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t i = 0; i < rows; ++i) {
      WidenWeightRow(w, i, row.data());
      const float* srow = scales.data() + (i / d_.block_rows) * scols;
      float* o = dst + i * cols;
      for (int64_t b = 0; b < scols; ++b) {
        const float scale = srow[b];
        const int64_t end = std::min(cols, (b + 1) * d_.block_cols);
        for (int64_t j = b * d_.block_cols; j < end; ++j) o[j] = row[j] * scale;
      }
    }
  }

  static float FromBits(uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }

  static uint32_t Bits(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    return bits;
  }

  // float8_e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no
  // infinities, S.1111.111 is NaN; exponent 0 holds subnormals m/8 * 2^-6.
  static const float* E4m3Table() {
    static const std::vector<float> table = [] {
      std::vector<float> t(256);
      for (uint32_t b = 0; b < 256; ++b) {
        const uint32_t sign = (b & 0x80u) << 24, exp = (b >> 3) & 0xfu, mant = b & 0x7u;
        uint32_t magnitude;
        if (exp == 0xf && mant == 0x7) {
          magnitude = 0x7fc00000u;
        } else if (exp == 0) {
          magnitude = Bits(static_cast<float>(mant) * 0x1p-9f);  // exact
        } else {
          magnitude = ((exp + 120u) << 23) | (mant << 20);  // rebias 7 -> 127
        }
        t[b] = FromBits(sign | magnitude);
      }
      return t;
    }();
    return table.data();
  }

  static void WidenWeightRow(const sdk::TensorView& w, int64_t i, float* row) {
    const int64_t cols = w.dims[1];
    switch (w.dtype) {
      case CKB_DTYPE_F8_E4M3: {
        const auto* p = static_cast<const uint8_t*>(w.data) + i * cols;
        const float* table = E4m3Table();
        for (int64_t j = 0; j < cols; ++j) row[j] = table[p[j]];
        return;
      }
      case CKB_DTYPE_BF16: {
        const auto* p = static_cast<const uint16_t*>(w.data) + i * cols;
        for (int64_t j = 0; j < cols; ++j) row[j] = FromBits(static_cast<uint32_t>(p[j]) << 16);
        return;
      }
      case CKB_DTYPE_F32:
        std::memcpy(row, static_cast<const float*>(w.data) + i * cols, sizeof(float) * cols);
        return;
      default:
        sdk::Fail(CKB_UNSUPPORTED, "fp8 dequantization: weight dtype " + Num(w.dtype) +
                                       " is not float8_e4m3fn, bfloat16 or float32");
    }
  }

  static std::string Hex(uint32_t bits, int digits) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string s = "0x";
    for (int d = digits - 1; d >= 0; --d) s += kDigits[(bits >> (4 * d)) & 0xfu];
    return s;
  }

  // Refuses scale `i` of `s` (row-major over the block grid) when it is NaN
  // or infinite, quoting it as stored: `dtype` and its `digits` hex digits.
  static void CheckScale(const sdk::TensorView& s, size_t i, float value, const char* dtype,
                         uint32_t bits, int digits) {
    if (std::isfinite(value)) return;
    const std::string what = std::isnan(value) ? "NaN" : value > 0 ? "+inf" : "-inf";
    const std::string stored = std::string(dtype) + " " + Hex(bits, digits);
    const auto cols = static_cast<size_t>(s.dims[1]);
    sdk::Fail(CKB_INVALID_ARGUMENT,
              "fp8 dequantization: weight_scale_inv block [" + Num(static_cast<int64_t>(i / cols)) +
                  ", " + Num(static_cast<int64_t>(i % cols)) + "] is " + what + " (" + stored +
                  "); a block scale must be finite, or the whole block dequantizes to NaN or "
                  "infinity");
  }

  static std::vector<float> WidenScales(const sdk::TensorView& s) {
    const auto n = static_cast<size_t>(s.num_elements());
    std::vector<float> out(n);
    switch (s.dtype) {
      case CKB_DTYPE_F32:
        std::memcpy(out.data(), s.data, n * sizeof(float));
        for (size_t i = 0; i < n; ++i) CheckScale(s, i, out[i], "float32", Bits(out[i]), 8);
        return out;
      case CKB_DTYPE_BF16: {
        const auto* p = static_cast<const uint16_t*>(s.data);
        for (size_t i = 0; i < n; ++i) {
          out[i] = FromBits(static_cast<uint32_t>(p[i]) << 16);
          CheckScale(s, i, out[i], "bfloat16", p[i], 4);
        }
        return out;
      }
      case CKB_DTYPE_F8_E8M0: {
        // ue8m0 scales: 2^(b - 127); 0xff is NaN.
        const auto* p = static_cast<const uint8_t*>(s.data);
        for (size_t i = 0; i < n; ++i) {
          out[i] = p[i] == 0xffu ? FromBits(0x7fc00000u)
                   : p[i] == 0   ? FromBits(0x00400000u)
                                 : FromBits(static_cast<uint32_t>(p[i]) << 23);
          CheckScale(s, i, out[i], "float8_e8m0fnu", p[i], 2);
        }
        return out;
      }
      default:
        sdk::Fail(CKB_UNSUPPORTED, "fp8 dequantization: weight_scale_inv dtype " + Num(s.dtype) +
                                       " is not float32, bfloat16 or float8_e8m0fnu");
    }
  }

  std::string model_type_;
  json config_;
  Dims d_;
};

// The HF config.json of MaxText's model names (hf_model_configs.py, from the
// published releases; the fp8 quantization_config removed as MaxText does).
json Preset(std::string_view name) {
  const json yarn = {{"beta_fast", 32.0},     {"beta_slow", 1.0},
                     {"factor", 40.0},        {"mscale", 1.0},
                     {"mscale_all_dim", 1.0}, {"original_max_position_embeddings", 4096},
                     {"rope_theta", 10000},   {"type", "yarn"}};
  static const std::map<std::string, json, std::less<>> presets = [&] {
    std::map<std::string, json, std::less<>> p;
    json v2_yarn = yarn;
    v2_yarn["mscale"] = 0.707;
    v2_yarn["mscale_all_dim"] = 0.707;
    p["deepseek2-16b"] = {{"architectures", {"DeepseekV2ForCausalLM"}},
                          {"attention_bias", false},
                          {"attention_dropout", 0.0},
                          {"auto_map",
                           {{"AutoConfig", "configuration_deepseek.DeepseekV2Config"},
                            {"AutoModel", "modeling_deepseek.DeepseekV2Model"},
                            {"AutoModelForCausalLM", "modeling_deepseek.DeepseekV2ForCausalLM"}}},
                          {"aux_loss_alpha", 0.001},
                          {"bos_token_id", 100000},
                          {"eos_token_id", 100001},
                          {"first_k_dense_replace", 1},
                          {"hidden_act", "silu"},
                          {"hidden_size", 2048},
                          {"initializer_range", 0.02},
                          {"intermediate_size", 10944},
                          {"kv_lora_rank", 512},
                          {"max_position_embeddings", 163840},
                          {"model_type", "deepseek_v2"},
                          {"moe_intermediate_size", 1408},
                          {"moe_layer_freq", 1},
                          {"n_group", 1},
                          {"n_routed_experts", 64},
                          {"n_shared_experts", 2},
                          {"norm_topk_prob", false},
                          {"num_attention_heads", 16},
                          {"num_experts_per_tok", 6},
                          {"num_hidden_layers", 27},
                          {"num_key_value_heads", 16},
                          {"pretraining_tp", 1},
                          {"q_lora_rank", nullptr},
                          {"qk_nope_head_dim", 128},
                          {"qk_rope_head_dim", 64},
                          {"rms_norm_eps", 1e-06},
                          {"rope_scaling", v2_yarn},
                          {"rope_theta", 10000},
                          {"routed_scaling_factor", 1.0},
                          {"scoring_func", "softmax"},
                          {"seq_aux", true},
                          {"tie_word_embeddings", false},
                          {"topk_group", 1},
                          {"topk_method", "greedy"},
                          {"torch_dtype", "bfloat16"},
                          {"transformers_version", "4.33.1"},
                          {"use_cache", true},
                          {"v_head_dim", 128},
                          {"vocab_size", 102400}};
    json v3 = {{"architectures", {"DeepseekV3ForCausalLM"}},
               {"attention_bias", false},
               {"attention_dropout", 0.0},
               {"auto_map",
                {{"AutoConfig", "configuration_deepseek.DeepseekV3Config"},
                 {"AutoModel", "modeling_deepseek.DeepseekV3Model"},
                 {"AutoModelForCausalLM", "modeling_deepseek.DeepseekV3ForCausalLM"}}},
               {"bos_token_id", 0},
               {"eos_token_id", 1},
               {"ep_size", 1},
               {"first_k_dense_replace", 3},
               {"hidden_act", "silu"},
               {"hidden_size", 7168},
               {"initializer_range", 0.02},
               {"intermediate_size", 18432},
               {"kv_lora_rank", 512},
               {"max_position_embeddings", 163840},
               {"model_type", "deepseek_v3"},
               {"moe_intermediate_size", 2048},
               {"moe_layer_freq", 1},
               {"n_group", 8},
               {"n_routed_experts", 256},
               {"n_shared_experts", 1},
               {"norm_topk_prob", true},
               {"num_attention_heads", 128},
               {"num_experts_per_tok", 8},
               {"num_hidden_layers", 61},
               {"num_key_value_heads", 128},
               {"num_nextn_predict_layers", 1},
               {"q_lora_rank", 1536},
               {"qk_nope_head_dim", 128},
               {"qk_rope_head_dim", 64},
               {"rms_norm_eps", 1e-06},
               {"rope_scaling", yarn},
               {"rope_theta", 10000},
               {"routed_scaling_factor", 2.5},
               {"scoring_func", "sigmoid"},
               {"tie_word_embeddings", false},
               {"topk_group", 4},
               {"topk_method", "noaux_tc"},
               {"torch_dtype", "bfloat16"},
               {"transformers_version", "4.33.1"},
               {"use_cache", true},
               {"v_head_dim", 128},
               {"vocab_size", 129280}};
    p["deepseek3-671b"] = v3;
    json v32 = v3;
    v32.erase("auto_map");
    v32["architectures"] = {"DeepseekV32ForCausalLM"};
    v32["model_type"] = "deepseek_v32";
    v32["index_head_dim"] = 128;
    v32["index_n_heads"] = 64;
    v32["index_topk"] = 2048;
    v32["transformers_version"] = "4.44.2";
    p["deepseek3.2-671b"] = v32;
    return p;
  }();
  auto it = presets.find(name);
  if (it == presets.end()) sdk::Fail(CKB_NOT_FOUND, "unknown model '" + std::string(name) + "'");
  return it->second;
}

// Tiny configs for `ckptbridge plugins check`, one per model type: V2 (no
// query LoRA), V3 (query LoRA, dense then MoE layers), V3.2 (plus the indexer).
std::vector<sdk::SampleConfig> Samples() {
  json v3 = {{"model_type", "deepseek_v3"},
             {"vocab_size", 64},
             {"hidden_size", 48},
             {"intermediate_size", 56},
             {"moe_intermediate_size", 16},
             {"num_hidden_layers", 3},
             {"first_k_dense_replace", 1},
             {"num_attention_heads", 4},
             {"num_key_value_heads", 4},
             {"q_lora_rank", 24},
             {"kv_lora_rank", 20},
             {"qk_nope_head_dim", 8},
             {"qk_rope_head_dim", 4},
             {"v_head_dim", 6},
             {"n_routed_experts", 4},
             {"n_shared_experts", 1},
             {"num_experts_per_tok", 2},
             {"moe_layer_freq", 1},
             {"topk_method", "noaux_tc"},
             {"scoring_func", "sigmoid"},
             {"n_group", 2},
             {"topk_group", 1},
             {"routed_scaling_factor", 2.5},
             {"norm_topk_prob", true},
             {"rms_norm_eps", 1e-6},
             {"rope_theta", 10000},
             {"tie_word_embeddings", false},
             {"torch_dtype", "bfloat16"}};
  json v2 = v3;
  v2["model_type"] = "deepseek_v2";
  v2["q_lora_rank"] = nullptr;
  v2["topk_method"] = "greedy";
  v2["scoring_func"] = "softmax";
  v2["n_group"] = 1;
  v2["routed_scaling_factor"] = 1.0;
  v2.erase("norm_topk_prob");
  json v32 = v3;
  v32["model_type"] = "deepseek_v32";
  v32["index_n_heads"] = 3;
  v32["index_head_dim"] = 10;
  v32["index_topk"] = 16;
  return {{"deepseek_v2", "base", v2}, {"deepseek_v3", "base", v3}, {"deepseek_v32", "base", v32}};
}

sdk::PluginDefinition Describe() {
  sdk::PluginDefinition d;
  d.name = "deepseek";
  d.version = CKPTBRIDGE_PLUGIN_VERSION;
  d.description =
      "DeepSeek V2, V3 and V3.2 (MaxText decoder block deepseek: MLA, dense + MoE layers, "
      "fp8 releases dequantized on the fly, MTP with --mtp)";
  d.model_types = {"deepseek_v2", "deepseek_v3", "deepseek_v32"};
  d.architectures = {"DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM", "DeepseekV32ForCausalLM"};
  d.model_presets = {"deepseek2-16b", "deepseek3-671b", "deepseek3.2-671b"};
  // ApplyCustom reads only immutable state.
  d.flags = CKB_PLUGIN_THREAD_SAFE_ADAPTERS;
  d.create = [](std::string_view model_type, const sdk::Config& config) {
    return std::make_unique<DeepSeekAdapter>(model_type, config);
  };
  d.preset = &Preset;
  d.samples = Samples();
  return d;
}

}  // namespace

CKPTBRIDGE_PLUGIN(Describe)
