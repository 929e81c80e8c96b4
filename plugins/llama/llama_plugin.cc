// plugins/llama - Llama 2/3.x, Mistral and Mixtral, HF <-> MaxText.
//
// The mapping is MaxText's own (checkpoint_conversion/utils/param_mapping.py,
// shared/docs/maxtext-mapping.md §6.4 and §6.7), with every dimension read
// from config.json:
//
//   HF                                   MaxText (scanned: layer axis 1)
//   model.embed_tokens.weight [V, E]     token_embedder.embedding [V, E]
//   model.norm.weight [E]                decoder.decoder_norm.scale [E]
//   lm_head.weight [V, E]                decoder.logits_dense.kernel [E, V]  (untied only)
//   layers.i.input_layernorm [E]         layers.pre_self_attention_layer_norm.scale
//   layers.i.post_attention_layernorm    layers.post_self_attention_layer_norm.scale
//   layers.i.self_attn.q_proj [Nq*D, E]  layers.self_attention.query.kernel [E, Nq, D]
//                                        (transposed, reshaped, RoPE-interleaved
//                                        for Llama 3.1 RoPE, scaled by 1/sqrt(D))
//   layers.i.self_attn.k_proj [Nkv*D, E] layers.self_attention.key.kernel [E, Nkv, D]
//   layers.i.self_attn.v_proj [Nkv*D, E] layers.self_attention.value.kernel [E, Nkv, D]
//   layers.i.self_attn.o_proj [E, Nq*D]  layers.self_attention.out.kernel [Nq, D, E]
//   layers.i.mlp.gate/up_proj [F, E]     layers.mlp.wi_0/wi_1.kernel [E, F]
//   layers.i.mlp.down_proj [E, F]        layers.mlp.wo.kernel [F, E]
//   Mixtral: block_sparse_moe.gate [X, E]          layers.MoeBlock_0.gate.kernel [E, X]
//            block_sparse_moe.experts.j.w1/w3 [Fm, E]  layers.MoeBlock_0.wi_0/wi_1 [X, E, Fm]
//            block_sparse_moe.experts.j.w2 [E, Fm]     layers.MoeBlock_0.wo [X, Fm, E]
//            (experts stacked on axis 0, layers on axis 1 when scanned)
//
// RoPE: MaxText rotates adjacent pairs only in its Llama 3.1 rotary embedding
// (selected by model name llama3.1-* or rope_type "llama3.1"); every other
// model here uses the half-split layout HF uses. So q/k are interleaved
// exactly when the HF config carries Llama 3 RoPE scaling
// (rope_scaling.rope_type == "llama3"), and the MaxText settings we emit say
// rope_type "llama3.1" in that case.
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "ckptbridge/sdk/plugin.hpp"

namespace {

namespace sdk = ckptbridge::sdk;
using nlohmann::json;
using sdk::Axis;

enum class Variant { kLlama, kMistral, kMixtral };

// Everything the mapping needs, read once from config.json.
struct Dims {
  Variant variant = Variant::kLlama;
  int64_t vocab = 0;
  int64_t embed = 0;
  int64_t mlp = 0;
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t experts = 0;
  int64_t experts_per_token = 0;
  bool tied = false;
  bool llama3_rope = false;
};

Variant VariantOf(std::string_view model_type) {
  if (model_type == "mistral") return Variant::kMistral;
  if (model_type == "mixtral") return Variant::kMixtral;
  return Variant::kLlama;
}

const char* ArchitectureOf(Variant v) {
  switch (v) {
    case Variant::kMistral:
      return "MistralForCausalLM";
    case Variant::kMixtral:
      return "MixtralForCausalLM";
    case Variant::kLlama:
      break;
  }
  return "LlamaForCausalLM";
}

// Refuses quantized checkpoints with the reason and the way out: their
// tensors are packed integers plus scales, not weights we can map.
void RefuseQuantized(const sdk::Config& config) {
  if (config.Has("quantization")) {
    const json& q = config.json().at("quantization");
    std::string detail;
    if (q.is_object()) {
      detail = std::to_string(q.value("bits", 0)) + "-bit " +
               q.value("mode", std::string("affine")) + ", group size " +
               std::to_string(q.value("group_size", 0));
    }
    sdk::Fail(CKB_UNSUPPORTED,
              "this checkpoint holds MLX-quantized weights (" + detail +
                  "): packed integers and scales, not the original weights; convert the "
                  "unquantized checkpoint, or dequantize it first (mlx_lm.convert --dequantize)");
  }
  if (config.Has("quantization_config")) {
    const json& q = config.json().at("quantization_config");
    std::string method =
        q.is_object() ? q.value("quant_method", std::string("unknown")) : "unknown";
    sdk::Fail(CKB_UNSUPPORTED, "this checkpoint is quantized (quantization_config.quant_method '" +
                                   method +
                                   "'), which the llama plugin does not convert; use the "
                                   "unquantized bfloat16/float16 release");
  }
}

Dims ReadDims(std::string_view model_type, const sdk::Config& c) {
  RefuseQuantized(c);
  Dims d;
  d.variant = VariantOf(model_type);
  d.vocab = c.Dim("vocab_size");
  d.embed = c.Dim("hidden_size");
  d.mlp = c.Dim("intermediate_size");
  d.layers = c.Dim("num_hidden_layers");
  d.heads = c.Dim("num_attention_heads");
  d.kv_heads = c.Has("num_key_value_heads") ? c.Dim("num_key_value_heads") : d.heads;
  d.head_dim = c.Has("head_dim") ? c.Dim("head_dim") : d.embed / d.heads;
  d.tied = c.Bool("tie_word_embeddings", false);
  if (c.Has("rope_scaling")) {
    const json& rs = c.json().at("rope_scaling");
    if (rs.is_object()) {
      const std::string type = rs.value("rope_type", rs.value("type", std::string()));
      d.llama3_rope = type == "llama3";
    }
  }
  if (d.variant == Variant::kMixtral) {
    d.experts = c.Dim("num_local_experts");
    d.experts_per_token = c.Int("num_experts_per_tok", 2);
  }
  if (c.Bool("attention_bias", false) || c.Bool("mlp_bias", false)) {
    sdk::Fail(CKB_UNSUPPORTED,
              "config.json: attention_bias/mlp_bias are set, but MaxText's llama2/mistral decoder "
              "blocks have no bias parameters");
  }
  if (d.head_dim % 2 != 0) {
    sdk::Fail(CKB_INVALID_ARGUMENT,
              "config.json: head_dim " + std::to_string(d.head_dim) + " must be even for RoPE");
  }
  return d;
}

// One per-layer mapping, expressed once and expanded for scanned (one rule,
// layer axis 1) or unscanned (a rule per layer, `layers_{i}`) output.
struct LayerTensor {
  std::string hf_suffix;  // after "model.layers.{i}."
  sdk::Dims hf_dims;
  sdk::Axes hf_axes;
  std::string mt_suffix;  // after "decoder.layers." / "decoder.layers_{i}."
  sdk::Dims mt_dims;      // one layer (and, for experts, all experts)
  sdk::Axes mt_axes;
  std::vector<sdk::Op> ops;
  bool per_expert = false;  // HF has one tensor per expert: `{expert}` in hf_suffix
};

class LlamaAdapter final : public sdk::Adapter {
 public:
  LlamaAdapter(std::string_view model_type, const sdk::Config& config)
      : model_type_(model_type), config_(config.json()), d_(ReadDims(model_type, config)) {}

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
    // Older checkpoints carry the RoPE frequency table; it is recomputed.
    rules.Ignore(sdk::Side::kHf, "model.layers.*.self_attn.rotary_emb.inv_freq",
                 "RoPE frequencies are recomputed from rope_theta");

    for (const LayerTensor& t : LayerTensors()) {
      if (options.scan_layers) {
        sdk::Rule& rule = rules.Add();
        AddSource(rule, t, "model.layers.{layer}.");
        rule.To("decoder.layers." + t.mt_suffix, t.mt_dims, t.mt_axes);
        if (t.per_expert) rule.Stack(Axis::kExperts, 0, d_.experts);
        rule.Stack(Axis::kLayers, 1, d_.layers);
        for (const sdk::Op& op : t.ops) rule.Then(op);
      } else {
        for (int64_t i = 0; i < d_.layers; ++i) {
          sdk::Rule& rule = rules.Add();
          AddSource(rule, t, "model.layers." + std::to_string(i) + ".");
          rule.To("decoder.layers_" + std::to_string(i) + "." + t.mt_suffix, t.mt_dims, t.mt_axes);
          if (t.per_expert) rule.Stack(Axis::kExperts, 0, d_.experts);
          for (const sdk::Op& op : t.ops) rule.Then(op);
        }
      }
    }
  }

  json MaxTextConfig() const override {
    json m;
    m["decoder_block"] = d_.variant == Variant::kMixtral   ? "mixtral"
                         : d_.variant == Variant::kMistral ? "mistral"
                                                           : "llama2";
    m["base_emb_dim"] = d_.embed;
    m["base_num_query_heads"] = d_.heads;
    m["base_num_kv_heads"] = d_.kv_heads;
    m["base_mlp_dim"] = d_.mlp;
    m["base_num_decoder_layers"] = d_.layers;
    m["head_dim"] = d_.head_dim;
    m["mlp_activations"] = {"silu", "linear"};
    m["vocab_size"] = d_.vocab;
    m["enable_dropout"] = false;
    m["logits_via_embedding"] = d_.tied;
    // MaxText divides tied logits by sqrt(emb_dim) unless told not to; Llama
    // does not scale its logits.
    if (d_.tied) m["normalize_embedding_logits"] = false;
    m["normalization_layer_epsilon"] = config_.value("rms_norm_eps", 1e-5);
    m["rope_max_timescale"] = config_.value("rope_theta", 10000.0);
    m["rope_type"] = d_.llama3_rope ? "llama3.1" : "default";
    if (d_.variant == Variant::kMixtral) {
      m["num_experts"] = d_.experts;
      m["num_experts_per_tok"] = d_.experts_per_token;
      m["base_moe_mlp_dim"] = d_.mlp;
    }
    return m;
  }

  json HfConfig() const override {
    json out = config_;
    out["model_type"] = model_type_;
    if (!out.contains("architectures")) out["architectures"] = {ArchitectureOf(d_.variant)};
    return out;
  }

 private:
  void AddSource(sdk::Rule& rule, const LayerTensor& t, const std::string& prefix) const {
    rule.From(prefix + t.hf_suffix, t.hf_dims, t.hf_axes);
  }

  std::vector<LayerTensor> LayerTensors() const {
    const int64_t e = d_.embed, nq = d_.heads, nkv = d_.kv_heads, hd = d_.head_dim, f = d_.mlp;
    // MaxText scales the query by f32(1/sqrt(D)) on import and undoes it with
    // f32(sqrt(D)) on export (both computed in double, rounded once).
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
    const float unscale = static_cast<float>(std::sqrt(static_cast<double>(hd)));

    std::vector<sdk::Op> query_ops = {sdk::Transpose({1, 0}), sdk::Reshape({e, nq, hd})};
    std::vector<sdk::Op> key_ops = {sdk::Transpose({1, 0}), sdk::Reshape({e, nkv, hd})};
    if (d_.llama3_rope) {
      query_ops.push_back(sdk::Interleave(2));
      key_ops.push_back(sdk::Interleave(2));
    }
    query_ops.push_back(sdk::Scale(scale, unscale));

    std::vector<LayerTensor> t = {
        {"input_layernorm.weight",
         {e},
         {Axis::kEmbed},
         "pre_self_attention_layer_norm.scale",
         {e},
         {Axis::kEmbed},
         {}},
        {"post_attention_layernorm.weight",
         {e},
         {Axis::kEmbed},
         "post_self_attention_layer_norm.scale",
         {e},
         {Axis::kEmbed},
         {}},
        {"self_attn.q_proj.weight",
         {nq * hd, e},
         {Axis::kFused, Axis::kEmbed},
         "self_attention.query.kernel",
         {e, nq, hd},
         {Axis::kEmbed, Axis::kHeads, Axis::kHeadDim},
         query_ops},
        {"self_attn.k_proj.weight",
         {nkv * hd, e},
         {Axis::kFused, Axis::kEmbed},
         "self_attention.key.kernel",
         {e, nkv, hd},
         {Axis::kEmbed, Axis::kKvHeads, Axis::kHeadDim},
         key_ops},
        {"self_attn.v_proj.weight",
         {nkv * hd, e},
         {Axis::kFused, Axis::kEmbed},
         "self_attention.value.kernel",
         {e, nkv, hd},
         {Axis::kEmbed, Axis::kKvHeads, Axis::kHeadDim},
         {sdk::Transpose({1, 0}), sdk::Reshape({e, nkv, hd})}},
        {"self_attn.o_proj.weight",
         {e, nq * hd},
         {Axis::kEmbed, Axis::kFused},
         "self_attention.out.kernel",
         {nq, hd, e},
         {Axis::kHeads, Axis::kHeadDim, Axis::kEmbed},
         {sdk::Transpose({1, 0}), sdk::Reshape({nq, hd, e})}},
    };
    if (d_.variant == Variant::kMixtral) {
      const int64_t x = d_.experts;
      t.push_back({"block_sparse_moe.gate.weight",
                   {x, e},
                   {Axis::kExperts, Axis::kEmbed},
                   "MoeBlock_0.gate.kernel",
                   {e, x},
                   {Axis::kEmbed, Axis::kExperts},
                   {sdk::Transpose({1, 0})}});
      // w1 = gate (wi_0), w3 = up (wi_1), w2 = down (wo); one HF tensor per
      // expert, stacked on MaxText axis 0.
      t.push_back({"block_sparse_moe.experts.{expert}.w1.weight",
                   {f, e},
                   {Axis::kMlp, Axis::kEmbed},
                   "MoeBlock_0.wi_0",
                   {e, f},
                   {Axis::kEmbed, Axis::kMlp},
                   {sdk::Transpose({1, 0})},
                   true});
      t.push_back({"block_sparse_moe.experts.{expert}.w3.weight",
                   {f, e},
                   {Axis::kMlp, Axis::kEmbed},
                   "MoeBlock_0.wi_1",
                   {e, f},
                   {Axis::kEmbed, Axis::kMlp},
                   {sdk::Transpose({1, 0})},
                   true});
      t.push_back({"block_sparse_moe.experts.{expert}.w2.weight",
                   {e, f},
                   {Axis::kEmbed, Axis::kMlp},
                   "MoeBlock_0.wo",
                   {f, e},
                   {Axis::kMlp, Axis::kEmbed},
                   {sdk::Transpose({1, 0})},
                   true});
    } else {
      t.push_back({"mlp.gate_proj.weight",
                   {f, e},
                   {Axis::kMlp, Axis::kEmbed},
                   "mlp.wi_0.kernel",
                   {e, f},
                   {Axis::kEmbed, Axis::kMlp},
                   {sdk::Transpose({1, 0})}});
      t.push_back({"mlp.up_proj.weight",
                   {f, e},
                   {Axis::kMlp, Axis::kEmbed},
                   "mlp.wi_1.kernel",
                   {e, f},
                   {Axis::kEmbed, Axis::kMlp},
                   {sdk::Transpose({1, 0})}});
      t.push_back({"mlp.down_proj.weight",
                   {e, f},
                   {Axis::kEmbed, Axis::kMlp},
                   "mlp.wo.kernel",
                   {f, e},
                   {Axis::kMlp, Axis::kEmbed},
                   {sdk::Transpose({1, 0})}});
    }
    return t;
  }

  std::string model_type_;
  json config_;
  Dims d_;
};

// HF config.json of MaxText's model names, from the published releases.
json Preset(std::string_view name) {
  auto llama3 = [](int64_t hidden, int64_t mlp, int64_t layers, int64_t heads, bool scaled) {
    json c = {{"architectures", {"LlamaForCausalLM"}},
              {"model_type", "llama"},
              {"vocab_size", 128256},
              {"hidden_size", hidden},
              {"intermediate_size", mlp},
              {"num_hidden_layers", layers},
              {"num_attention_heads", heads},
              {"num_key_value_heads", 8},
              {"head_dim", 128},
              {"hidden_act", "silu"},
              {"max_position_embeddings", scaled ? 131072 : 8192},
              {"rms_norm_eps", 1e-5},
              {"rope_theta", 500000.0},
              {"attention_bias", false},
              {"mlp_bias", false},
              {"bos_token_id", 128000},
              {"eos_token_id", 128001},
              {"tie_word_embeddings", false},
              {"torch_dtype", "bfloat16"}};
    if (scaled) {
      c["rope_scaling"] = {{"factor", 8.0},
                           {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0},
                           {"original_max_position_embeddings", 8192},
                           {"rope_type", "llama3"}};
    }
    return c;
  };
  auto llama2 = [](int64_t hidden, int64_t mlp, int64_t layers, int64_t heads, int64_t kv) {
    return json{{"architectures", {"LlamaForCausalLM"}},
                {"model_type", "llama"},
                {"vocab_size", 32000},
                {"hidden_size", hidden},
                {"intermediate_size", mlp},
                {"num_hidden_layers", layers},
                {"num_attention_heads", heads},
                {"num_key_value_heads", kv},
                {"hidden_act", "silu"},
                {"max_position_embeddings", 4096},
                {"rms_norm_eps", 1e-5},
                {"rope_theta", 10000.0},
                {"bos_token_id", 1},
                {"eos_token_id", 2},
                {"tie_word_embeddings", false},
                {"torch_dtype", "bfloat16"}};
  };
  auto mixtral = [](int64_t hidden, int64_t mlp, int64_t layers, int64_t heads, int64_t vocab,
                    int64_t max_pos) {
    return json{{"architectures", {"MixtralForCausalLM"}},
                {"model_type", "mixtral"},
                {"vocab_size", vocab},
                {"hidden_size", hidden},
                {"intermediate_size", mlp},
                {"num_hidden_layers", layers},
                {"num_attention_heads", heads},
                {"num_key_value_heads", 8},
                {"num_local_experts", 8},
                {"num_experts_per_tok", 2},
                {"hidden_act", "silu"},
                {"max_position_embeddings", max_pos},
                {"rms_norm_eps", 1e-5},
                {"rope_theta", 1000000.0},
                {"router_aux_loss_coef", 0.02},
                {"sliding_window", nullptr},
                {"bos_token_id", 1},
                {"eos_token_id", 2},
                {"tie_word_embeddings", false},
                {"torch_dtype", "bfloat16"}};
  };
  static const std::map<std::string, json, std::less<>> presets = [&] {
    std::map<std::string, json, std::less<>> p;
    p["llama2-7b"] = llama2(4096, 11008, 32, 32, 32);
    p["llama2-13b"] = llama2(5120, 13824, 40, 40, 40);
    p["llama2-70b"] = llama2(8192, 28672, 80, 64, 8);
    p["llama3-8b"] = llama3(4096, 14336, 32, 32, false);
    p["llama3-70b"] = llama3(8192, 28672, 80, 64, false);
    p["llama3.1-8b"] = llama3(4096, 14336, 32, 32, true);
    p["llama3.1-70b"] = llama3(8192, 28672, 80, 64, true);
    p["llama3.1-405b"] = llama3(16384, 53248, 126, 128, true);
    p["llama3.3-70b"] = llama3(8192, 28672, 80, 64, true);
    json mistral = llama2(4096, 14336, 32, 32, 8);
    mistral["architectures"] = {"MistralForCausalLM"};
    mistral["model_type"] = "mistral";
    mistral["max_position_embeddings"] = 32768;
    mistral["rope_theta"] = 1000000.0;
    mistral["sliding_window"] = nullptr;
    p["mistral-7b"] = mistral;
    p["mixtral-8x7b"] = mixtral(4096, 14336, 32, 32, 32000, 32768);
    json m22 = mixtral(6144, 16384, 56, 48, 32768, 65536);
    m22["router_aux_loss_coef"] = 0.001;
    p["mixtral-8x22b"] = m22;
    return p;
  }();
  std::string key(name);
  // MaxText accepts "-Instruct" variants with the base model's architecture.
  const std::string suffix = "-Instruct";
  if (key.size() > suffix.size() &&
      key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0) {
    key.resize(key.size() - suffix.size());
  }
  auto it = presets.find(key);
  if (it == presets.end()) sdk::Fail(CKB_NOT_FOUND, "unknown model '" + std::string(name) + "'");
  return it->second;
}

// Tiny configs for `ckptbridge plugins check`: one per model type, plus the
// variants that take other rules (Llama 3.1 RoPE interleaving, tied output).
std::vector<sdk::SampleConfig> Samples() {
  auto tiny = [](const char* model_type) {
    return json{{"model_type", model_type}, {"vocab_size", 40},
                {"hidden_size", 16},        {"intermediate_size", 24},
                {"num_hidden_layers", 2},   {"num_attention_heads", 4},
                {"num_key_value_heads", 2}, {"head_dim", 4},
                {"rms_norm_eps", 1e-5},     {"rope_theta", 10000.0},
                {"torch_dtype", "bfloat16"}};
  };
  json llama31 = tiny("llama");
  llama31["rope_scaling"] = {{"factor", 8.0},
                             {"low_freq_factor", 1.0},
                             {"high_freq_factor", 4.0},
                             {"original_max_position_embeddings", 64},
                             {"rope_type", "llama3"}};
  json tied = tiny("llama");
  tied["tie_word_embeddings"] = true;
  json mixtral = tiny("mixtral");
  mixtral["num_local_experts"] = 3;
  mixtral["num_experts_per_tok"] = 2;
  return {{"llama", "base", tiny("llama")},
          {"llama", "llama3.1-rope", llama31},
          {"llama", "tied", tied},
          {"mistral", "base", tiny("mistral")},
          {"mixtral", "moe", mixtral}};
}

sdk::PluginDefinition Describe() {
  sdk::PluginDefinition d;
  d.name = "llama";
  d.version = CKPTBRIDGE_PLUGIN_VERSION;
  d.description =
      "Llama 2/3.x, Mistral and Mixtral (MaxText decoder blocks llama2, mistral, mixtral)";
  d.model_types = {"llama", "mistral", "mixtral"};
  d.architectures = {"LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM"};
  d.model_presets = {"llama2-7b",    "llama2-13b",  "llama2-70b",   "llama3-8b",
                     "llama3-70b",   "llama3.1-8b", "llama3.1-70b", "llama3.1-405b",
                     "llama3.3-70b", "mistral-7b",  "mixtral-8x7b", "mixtral-8x22b"};
  d.flags = CKB_PLUGIN_THREAD_SAFE_ADAPTERS;
  d.create = [](std::string_view model_type, const sdk::Config& config) {
    return std::make_unique<LlamaAdapter>(model_type, config);
  };
  d.preset = &Preset;
  d.samples = Samples();
  return d;
}

}  // namespace

CKPTBRIDGE_PLUGIN(Describe)
