// plugins/gemma - Gemma2 and Gemma3 (text, and the SigLIP vision tower with
// --multimodal), HF <-> MaxText.
//
// The mapping is MaxText's own (checkpoint_conversion/utils/param_mapping.py:
// GEMMA2_* and GEMMA3_* with their hooks; shared/docs/maxtext-mapping.md §2,
// §6.2, §6.3), with every dimension read from config.json.
//
//   Gemma2 (model.*), one MaxText layer m = HF layers 2m (sub-modules `_local`)
//   and 2m+1 (`_global`); unscanned decoder.layers_{m}, scanned decoder.layers
//   with L/2 on axis 1:
//   layers.i.input_layernorm [E]             pre_self_attention_norm_{t}.scale       +1
//   layers.i.post_attention_layernorm [E]    post_self_attention_norm_{t}.scale      +1
//   layers.i.pre_feedforward_layernorm [E]   pre_ffw_norm_{t}.scale                  +1
//   layers.i.post_feedforward_layernorm [E]  post_ffw_norm_{t}.scale                 +1
//   self_attn.q_proj [Nq*D, E]               self_attention_{t}.query.kernel [E, Nq, D]
//                                            (x f32(1/sqrt(D)); MaxText applies no
//                                            query scaling at run time)
//   self_attn.k_proj/v_proj [Nkv*D, E]       self_attention_{t}.key/value.kernel [E, Nkv, D]
//   self_attn.o_proj [E, Nq*D]               self_attention_{t}.out.kernel [Nq, D, E]
//   mlp.gate/up_proj [F, E], down [E, F]     mlp_{t}.wi_0/wi_1.kernel [E, F], mlp_{t}.wo.kernel
//   embed_tokens [V, E]                      token_embedder.embedding [Vmt, E]
//                                            (zero-padded to Vmt, then x f32(sqrt(E)))
//   norm [E]                                 decoder.decoder_norm.scale                +1
//
//   Gemma3 (gemma3_text: model.*; gemma3: model.language_model.*), the same
//   tensors without the `_{t}` suffix plus self_attn.q_norm/k_norm [D] ->
//   self_attention.query_norm/key_norm.scale (+1). The query is not scaled
//   (MaxText scales at run time). Unscanned decoder.layers_{i}; scanned,
//   MaxText repeats a block of 6 layers (5 local + 1 global):
//   decoder.layers.layers_{b} holds HF layers b, b+6, ... below 6*floor(L/6)
//   (stacked on axis 1), and decoder.layers_remainder.layers_{r} holds HF
//   layer 6*floor(L/6)+r unstacked. The embedding is multiplied by
//   sqrt(E) rounded to bfloat16 (50.5 for E 2560, as HF Gemma3 scales it at
//   run time), then cut or zero-padded to MaxText's vocabulary.
//
//   Gemma3 vision (--multimodal only; never scanned), HF
//   model.vision_tower.vision_model.* -> vision_encoder.Gemma3VisionEncoderLayer_0.*:
//   embeddings.patch_embedding.weight [Ev, C, P, P]   embedding.kernel [P, P, C, Ev]
//   embeddings.patch_embedding.bias [Ev]              embedding.bias [Ev]
//   embeddings.position_embedding.weight [N, Ev]      pos_embedding [1, N, Ev]
//   post_layernorm.weight / .bias                     Transformer.encoder_norm.scale / .bias
//   encoder.layers.i.layer_norm1/2.weight / .bias     Transformer.encoderblock_i.LayerNorm_0/1
//   encoder.layers.i.self_attn.q/k/v_proj.weight      ...MultiHeadDotProductAttention_0.
//                                                     query/key/value.kernel [Ev, Hv, Dv]
//   encoder.layers.i.self_attn.q/k/v_proj.bias [Ev]   ...query/key/value.bias [Hv, Dv]
//   encoder.layers.i.self_attn.out_proj.weight        ...out.kernel [Hv, Dv, Ev]
//   encoder.layers.i.self_attn.out_proj.bias          ...out.bias [Ev]
//   encoder.layers.i.mlp.fc1/fc2.weight / .bias       ...MlpBlockViT_0.Dense_0/Dense_1.kernel/.bias
//   model.multi_modal_projector.mm_input_projection_weight [Ev, E]
//                                                     vision_encoder.VisionEmbedder_0.
//                                                     mm_input_projection.w [Ev, E]
//   model.multi_modal_projector.mm_soft_emb_norm.weight  ...mm_soft_embedding_norm.scale  +1
//   (SigLIP's LayerNorms are plain; only Gemma's RMSNorms store w - 1.)
//
// Names: the released Gemma3 files say language_model.model.*,
// vision_tower.vision_model.* and multi_modal_projector.*; transformers
// renames them to model.language_model.* etc. on load (and saves them so).
// Both are read; export writes transformers' names, as MaxText does.
//
// Arithmetic: every op computes in f32 and the engine rounds once. Norms
// +1 / -1, the Gemma2 query x f32(1/sqrt(D)) / x f32(sqrt(D)) and both
// embedding products are MaxText's to the bit. MaxText divides the embedding
// by its normalizer on export; ops can only multiply, so export multiplies by
// the f32 reciprocal. For every bfloat16 value and the normalizers of all six
// MaxText models, a bfloat16 export is bit-identical to the quotient; a
// float32 export differs from it in the last bit for 13-37% of the values.
//
// Attention patterns: MaxText fixes them (gemma2: local, global; gemma3: five
// local, one global). A config whose sliding_window_pattern says otherwise
// (the MLX test model uses 2) converts all the same - every layer's weights
// have the same form - but MaxText will run it with its own pattern.
//
// Vocabulary: MaxText's gemma2 models pad the 256000-row release to 256128
// rows and its gemma3 models have 262144 rows (the 262208-row release is cut,
// losing rows MaxText has no token for). Other vocabularies map to themselves
// unless config.json carries `maxtext_vocab_size` (ckptbridge's own key,
// dropped on export). On export the rows are cut (gemma2) or cut / zero-padded
// (gemma3) back to vocab_size.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckptbridge/sdk/plugin.hpp"

namespace {

namespace sdk = ckptbridge::sdk;
using nlohmann::json;
using sdk::Axis;

enum class Family { kGemma2, kGemma3, kGemma3Text };

struct FamilyInfo {
  Family family;
  const char* model_type;
  const char* architecture;
  const char* decoder_block;  // MaxText's decoder_block
};

// The order is the descriptor's: model_types[i] goes with architectures[i].
constexpr FamilyInfo kFamilies[] = {
    {Family::kGemma2, "gemma2", "Gemma2ForCausalLM", "gemma2"},
    {Family::kGemma3, "gemma3", "Gemma3ForConditionalGeneration", "gemma3"},
    {Family::kGemma3Text, "gemma3_text", "Gemma3ForCausalLM", "gemma3"},
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
  sdk::Fail(CKB_NOT_FOUND, "the gemma plugin does not serve model_type '" +
                               std::string(model_type) +
                               "' (it serves gemma2, gemma3, gemma3_text)");
}

std::string Str(int64_t v) { return std::to_string(v); }

// MaxText's own vocabulary sizes for the released tokenizers.
constexpr int64_t kGemma2ReleaseVocab = 256000;
constexpr int64_t kGemma2MaxTextVocab = 256128;
constexpr int64_t kGemma3ReleaseVocab = 262208;
constexpr int64_t kGemma3MaxTextVocab = 262144;
// Gemma3's scanned block: 5 sliding-window layers and a global one
// (MaxText's GEMMA3_ATTENTION_PATTERN).
constexpr int64_t kGemma3Block = 6;

// numpy's bfloat16(x): round to nearest even (the values here are finite).
float RoundToBf16(double x) {
  const float f = static_cast<float>(x);
  uint32_t bits = 0;
  std::memcpy(&bits, &f, sizeof bits);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  bits &= 0xFFFF0000u;
  float out = 0.0f;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

// The SigLIP vision tower of a gemma3 config (vision_config).
struct Vision {
  int64_t hidden = 0;  // Ev
  int64_t mlp = 0;     // Fv
  int64_t layers = 0;
  int64_t heads = 0;  // Hv
  int64_t head_dim = 0;
  int64_t patch = 0;  // P
  int64_t image = 0;
  int64_t channels = 0;  // C
  int64_t positions() const { return (image / patch) * (image / patch); }
};

// Everything the mapping needs, read once from config.json.
struct Dims {
  Family family = Family::kGemma2;
  int64_t vocab = 0;     // HF rows
  int64_t mt_vocab = 0;  // MaxText rows
  int64_t embed = 0;
  int64_t mlp = 0;
  int64_t layers = 0;  // HF layers
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  std::string activation;
  double rms_norm_eps = 1e-6;
  double rope_theta = 0.0;
  json sliding_window;  // null when absent
  // gemma2
  json final_soft_cap;
  json attn_soft_cap;
  // gemma3
  double rope_local_theta = 10000.0;
  double rope_linear_factor = 1.0;
  bool has_vision = false;  // a usable vision_config (model_type gemma3)
  // Why vision_config cannot be converted; raised only with --multimodal, so
  // the text model of such a checkpoint still converts.
  std::string vision_problem;
  Vision vision;

  bool gemma2() const { return family == Family::kGemma2; }
  // Where the text tensors live in HF.
  std::string text_prefix() const {
    return family == Family::kGemma3 ? "model.language_model." : "model.";
  }
};

// Refuses quantized checkpoints: their tensors are packed integers and
// scales, not weights that map onto MaxText's parameters.
void RefuseQuantized(const sdk::Config& config) {
  if (config.Has("quantization")) {
    sdk::Fail(CKB_UNSUPPORTED,
              "this checkpoint holds MLX-quantized weights (config.json 'quantization'): packed "
              "integers and scales, not the original weights; convert the unquantized "
              "checkpoint, or dequantize it first (mlx_lm.convert --dequantize)");
  }
  if (config.Has("quantization_config")) {
    const json& q = config.json().at("quantization_config");
    const std::string method =
        q.is_object() ? q.value("quant_method", std::string("unknown")) : "unknown";
    sdk::Fail(CKB_UNSUPPORTED, "this checkpoint is quantized (quantization_config.quant_method '" +
                                   method +
                                   "'), which the gemma plugin does not convert; use the "
                                   "unquantized bfloat16 release");
  }
}

// A JSON number or null (soft caps, sliding windows), checked for type.
json NumberOrNull(const sdk::Config& c, std::string_view key, json fallback) {
  if (!c.json().contains(key)) return fallback;
  const json& v = c.json().at(std::string(key));
  if (v.is_null() || v.is_number()) return v;
  sdk::Fail(CKB_INVALID_ARGUMENT,
            c.label() + ": '" + std::string(key) + "' must be a number or null, got " + v.dump());
}

// The factor of a Gemma3 RoPE scaling object (rope_scaling, or one of
// rope_parameters): MaxText's gemma3 block knows linear scaling only.
double LinearRopeFactor(const sdk::Config& rope) {
  const std::string type = rope.String("rope_type", rope.String("type", "default"));
  if (type == "linear") return rope.Number("factor");
  if (type != "default") {
    sdk::Fail(CKB_UNSUPPORTED, rope.label() + ": rope_type '" + type +
                                   "', but MaxText's gemma3 decoder block has only linear RoPE "
                                   "scaling (rope_linear_scaling_factor)");
  }
  return 1.0;
}

Vision ReadVision(const sdk::Config& v) {
  Vision d;
  d.hidden = v.Dim("hidden_size");
  d.mlp = v.Dim("intermediate_size");
  d.layers = v.Dim("num_hidden_layers");
  d.heads = v.Dim("num_attention_heads");
  d.patch = v.Dim("patch_size");
  d.image = v.Dim("image_size");
  d.channels = v.Has("num_channels") ? v.Dim("num_channels") : 3;
  if (d.hidden % d.heads != 0) {
    sdk::Fail(CKB_INVALID_ARGUMENT, v.label() + ": hidden_size " + Str(d.hidden) +
                                        " is not a multiple of num_attention_heads " +
                                        Str(d.heads));
  }
  d.head_dim = d.hidden / d.heads;
  if (d.image % d.patch != 0) {
    sdk::Fail(CKB_INVALID_ARGUMENT, v.label() + ": image_size " + Str(d.image) +
                                        " is not a multiple of patch_size " + Str(d.patch) +
                                        ", so the patches do not tile the image");
  }
  if (v.Bool("vision_use_head", false)) {
    sdk::Fail(CKB_UNSUPPORTED, v.label() +
                                   ": vision_use_head is true, but MaxText's gemma3 vision "
                                   "encoder has no attention-pooling head");
  }
  return d;
}

Dims ReadDims(std::string_view model_type, const sdk::Config& top) {
  RefuseQuantized(top);
  Dims d;
  d.family = FamilyOf(model_type);
  const char* block = InfoOf(d.family).decoder_block;
  // Multimodal Gemma3 keeps the language model's settings in text_config;
  // the SigLIP tower's in vision_config.
  const sdk::Config c = d.family == Family::kGemma3 ? top.Object("text_config") : top;
  if (d.family == Family::kGemma3 && top.Has("vision_config")) {
    try {
      d.vision = ReadVision(top.Object("vision_config"));
      d.has_vision = true;
    } catch (const sdk::Error& e) {
      d.vision_problem = e.what();
    }
  }

  // transformers' defaults (Gemma2Config, Gemma3TextConfig) where the
  // releases rely on them: Gemma3's text_config omits the head counts,
  // head_dim and vocab_size. The model's size itself is always required.
  d.vocab = c.Has("vocab_size") ? c.Dim("vocab_size")
                                : (d.gemma2() ? kGemma2ReleaseVocab : kGemma3ReleaseVocab);
  d.embed = c.Dim("hidden_size");
  d.mlp = c.Dim("intermediate_size");
  d.layers = c.Dim("num_hidden_layers");
  d.heads = c.Has("num_attention_heads") ? c.Dim("num_attention_heads") : 8;
  d.kv_heads = c.Has("num_key_value_heads") ? c.Dim("num_key_value_heads") : 4;
  d.head_dim = c.Has("head_dim") ? c.Dim("head_dim") : 256;
  if (d.heads % d.kv_heads != 0) {
    sdk::Fail(CKB_INVALID_ARGUMENT, c.label() + ": num_attention_heads " + Str(d.heads) +
                                        " is not a multiple of num_key_value_heads " +
                                        Str(d.kv_heads));
  }
  if (d.gemma2() && d.layers % 2 != 0) {
    sdk::Fail(CKB_INVALID_ARGUMENT,
              c.label() + ": num_hidden_layers " + Str(d.layers) +
                  " is odd, but one layer of MaxText's gemma2 decoder block holds a pair of HF "
                  "layers (sliding-window, then global attention)");
  }
  if (c.Bool("attention_bias", false)) {
    sdk::Fail(CKB_UNSUPPORTED, c.label() + ": attention_bias is true, but MaxText's " + block +
                                   " decoder block has no attention bias parameters");
  }
  // Gemma ties its output layer to the embedding; MaxText's gemma blocks
  // compute logits from it (logits_via_embedding) and have no lm_head.
  for (const sdk::Config* where : {&top, &c}) {
    if (!where->Bool("tie_word_embeddings", true)) {
      sdk::Fail(CKB_UNSUPPORTED,
                where->label() + ": tie_word_embeddings is false, but MaxText's " + block +
                    " decoder block computes the logits from the embedding and has no separate "
                    "output layer");
    }
  }

  const int64_t family_vocab = d.gemma2() ? kGemma2ReleaseVocab : kGemma3ReleaseVocab;
  const int64_t family_mt_vocab = d.gemma2() ? kGemma2MaxTextVocab : kGemma3MaxTextVocab;
  d.mt_vocab = d.vocab == family_vocab ? family_mt_vocab : d.vocab;
  if (top.Has("maxtext_vocab_size")) d.mt_vocab = top.Dim("maxtext_vocab_size");
  if (d.gemma2() && d.mt_vocab < d.vocab) {
    // MaxText's pad_hf_embedding_layer writes the HF rows into the MaxText
    // array; it cannot cut.
    sdk::Fail(CKB_INVALID_ARGUMENT, "config.json: maxtext_vocab_size " + Str(d.mt_vocab) +
                                        " is smaller than vocab_size " + Str(d.vocab) +
                                        "; MaxText's gemma2 embedding can be padded, not cut");
  }

  const std::string act = c.String(c.Has("hidden_activation") ? "hidden_activation" : "hidden_act",
                                   "gelu_pytorch_tanh");
  // MaxText's "gelu" is the tanh approximation, which is what Gemma uses.
  d.activation = act.rfind("gelu", 0) == 0 ? "gelu" : act;
  d.rms_norm_eps = c.Number("rms_norm_eps", 1e-6);
  d.sliding_window = NumberOrNull(c, "sliding_window", 4096);
  // transformers 5 keeps the RoPE settings under rope_parameters, for
  // Gemma3 one object per attention type; older configs at the top level.
  const bool v5_rope = c.Has("rope_parameters") && c.json().at("rope_parameters").is_object();
  if (d.gemma2()) {
    d.rope_theta = v5_rope ? c.Object("rope_parameters").Number("rope_theta", 10000.0)
                           : c.Number("rope_theta", 10000.0);
    d.final_soft_cap = NumberOrNull(c, "final_logit_softcapping", 30.0);
    d.attn_soft_cap = NumberOrNull(c, "attn_logit_softcapping", 50.0);
  } else if (v5_rope && c.json().at("rope_parameters").contains("full_attention")) {
    const sdk::Config params = c.Object("rope_parameters");
    const sdk::Config global = params.Object("full_attention");
    d.rope_theta = global.Number("rope_theta", 1000000.0);
    d.rope_linear_factor = LinearRopeFactor(global);
    if (params.Has("sliding_attention")) {
      d.rope_local_theta = params.Object("sliding_attention").Number("rope_theta", 10000.0);
    }
  } else {
    d.rope_theta = c.Number("rope_theta", 1000000.0);
    d.rope_local_theta = c.Number("rope_local_base_freq", 10000.0);
    if (c.Has("rope_scaling")) d.rope_linear_factor = LinearRopeFactor(c.Object("rope_scaling"));
  }
  return d;
}

// One per-layer mapping, expressed once and expanded for scanned (one rule,
// layer axis 1) or unscanned (a rule per layer) output.
struct LayerTensor {
  std::string hf;  // after "<prefix>layers.{i}."
  sdk::Dims hf_dims;
  sdk::Axes hf_axes;
  std::string mt;     // after the layer container
  sdk::Dims mt_dims;  // one layer
  sdk::Axes mt_axes;
  std::vector<sdk::Op> ops;
};

// A tensor copied as is (LayerNorm scales and biases).
LayerTensor Same(std::string hf, std::string mt, int64_t n, Axis axis) {
  return {std::move(hf), {n}, {axis}, std::move(mt), {n}, {axis}, {}};
}

// A Gemma RMSNorm: HF stores w and computes x * (1 + w); MaxText stores the
// scale itself (MaxText's scale_rmsnorm: +1 in, -1 out).
LayerTensor Norm(std::string hf, std::string mt, int64_t n, Axis axis) {
  LayerTensor t = Same(std::move(hf), std::move(mt), n, axis);
  t.ops = {sdk::Add(1.0f)};
  return t;
}

// torch Linear [out, in] -> MaxText kernel [in, out] (MaxText's reshape_kernel
// for two dimensions).
LayerTensor Linear(std::string hf, std::string mt, int64_t out, Axis out_axis, int64_t in,
                   Axis in_axis) {
  return {std::move(hf), {out, in},           {out_axis, in_axis},     std::move(mt),
          {in, out},     {in_axis, out_axis}, {sdk::Transpose({1, 0})}};
}

// torch Linear [out, in] -> MaxText kernel whose dims, row-major, are
// [in, out] split further (MaxText's reshape_kernel: transpose, then reshape).
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

class GemmaAdapter final : public sdk::Adapter {
 public:
  GemmaAdapter(std::string_view model_type, const sdk::Config& config)
      : config_(config.json()), d_(ReadDims(model_type, config)) {}

  void Rules(const sdk::RuleOptions& options, sdk::RuleSet& rules) const override {
    // --multimodal means "vision towers too, for families that have them":
    // gemma2 and gemma3_text have none, so it changes nothing there.
    const bool multimodal = d_.family == Family::kGemma3 && options.raw.is_object() &&
                            options.raw.value("multimodal", false);
    if (multimodal && !d_.vision_problem.empty()) {
      sdk::Fail(CKB_INVALID_ARGUMENT, "--multimodal: " + d_.vision_problem);
    }
    if (multimodal && !d_.has_vision) {
      sdk::Fail(CKB_INVALID_ARGUMENT,
                "--multimodal: config.json has no vision_config to size the vision tower from");
    }
    if (d_.family == Family::kGemma3) {
      // The released files' names, read as transformers names them.
      rules.Rename("language_model.model.", "model.language_model.");
      rules.Rename("language_model.lm_head.", "lm_head.");
      rules.Rename("vision_tower.", "model.vision_tower.");
      rules.Rename("multi_modal_projector.", "model.multi_modal_projector.");
      // transformers 5.8 and later drop the vision_model level.
      for (const char* part : {"embeddings.", "encoder.", "post_layernorm."}) {
        rules.Rename(std::string("model.vision_tower.") + part,
                     std::string("model.vision_tower.vision_model.") + part);
      }
    }
    rules.Ignore(sdk::Side::kHf, "lm_head.weight",
                 "Gemma ties its output layer to the embedding, which MaxText uses for the logits");

    AddEmbeddingAndNorm(rules);
    if (d_.gemma2()) {
      AddGemma2Layers(rules, options.scan_layers);
    } else {
      AddGemma3Layers(rules, options.scan_layers);
    }

    if (d_.family != Family::kGemma3) return;
    if (multimodal) {
      AddVision(rules);
    } else {
      const std::string reason =
          "vision tower and multimodal projector: converted only with --multimodal";
      rules.Ignore(sdk::Side::kHf, "model.vision_tower.*", reason);
      rules.Ignore(sdk::Side::kHf, "model.multi_modal_projector.*", reason);
      rules.Ignore(sdk::Side::kMaxText, "vision_encoder.*", reason);
    }
  }

  json MaxTextConfig() const override {
    json m;
    m["decoder_block"] = InfoOf(d_.family).decoder_block;
    m["base_emb_dim"] = d_.embed;
    m["base_num_query_heads"] = d_.heads;
    m["base_num_kv_heads"] = d_.kv_heads;
    m["base_mlp_dim"] = d_.mlp;
    // A MaxText gemma2 layer is an HF pair.
    m["base_num_decoder_layers"] = d_.gemma2() ? d_.layers / 2 : d_.layers;
    m["head_dim"] = d_.head_dim;
    m["mlp_activations"] = {d_.activation, "linear"};
    m["vocab_size"] = d_.mt_vocab;
    m["normalization_layer_epsilon"] = d_.rms_norm_eps;
    m["logits_via_embedding"] = true;
    m["use_post_attn_norm"] = true;
    m["use_post_ffw_norm"] = true;
    m["rope_max_timescale"] = d_.rope_theta;
    if (!d_.sliding_window.is_null()) m["sliding_window_size"] = d_.sliding_window;
    m["enable_dropout"] = false;
    m["tokenizer_type"] = "huggingface";
    if (d_.gemma2()) {
      if (!d_.final_soft_cap.is_null()) m["final_logits_soft_cap"] = d_.final_soft_cap;
      if (!d_.attn_soft_cap.is_null()) m["attn_logits_soft_cap"] = d_.attn_soft_cap;
      return m;
    }
    m["local_rope_max_timescale"] = d_.rope_local_theta;
    m["rope_linear_scaling_factor"] = d_.rope_linear_factor;
    if (d_.has_vision) {
      const Vision& v = d_.vision;
      m["vision_encoder_block"] = "gemma3";
      m["image_size_for_vit"] = v.image;
      m["num_channels_for_vit"] = v.channels;
      m["patch_size_for_vit"] = v.patch;
      m["conv_stride_for_vit"] = v.patch;
      m["hidden_size_for_vit"] = v.hidden;
      m["intermediate_size_for_vit"] = v.mlp;
      m["num_hidden_layers_for_vit"] = v.layers;
      m["num_attention_heads_for_vit"] = v.heads;
      m["image_placeholder"] = "<start_of_image>";
    }
    return m;
  }

  json HfConfig() const override {
    json out = config_;
    // Our own key: the exported embedding has vocab_size rows again.
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
  void AddEmbeddingAndNorm(sdk::RuleSet& rules) const {
    const int64_t e = d_.embed, v = d_.vocab, vmt = d_.mt_vocab;
    const std::string p = d_.text_prefix();
    sdk::Rule& embedding =
        rules.Add()
            .From(p + "embed_tokens.weight", {v, e}, {Axis::kVocab, Axis::kEmbed})
            .To("token_embedder.embedding", {vmt, e}, {Axis::kVocab, Axis::kEmbed});
    const double root = std::sqrt(static_cast<double>(e));
    // Gemma2: np.float32(sqrt(E)); Gemma3: bfloat16(sqrt(E)), HF Gemma3's own
    // run-time factor. Export divides by it in MaxText; here it multiplies
    // by the f32 reciprocal (see the header).
    const float normalizer = d_.gemma2() ? static_cast<float>(root) : RoundToBf16(root);
    const float inverse = static_cast<float>(1.0 / static_cast<double>(normalizer));
    if (vmt > v) embedding.Then(sdk::Pad(0, vmt));
    if (vmt < v) embedding.Then(sdk::Truncate(0, vmt)).Lossy();
    embedding.Then(sdk::Scale(normalizer, inverse));
    rules.Add()
        .From(p + "norm.weight", {e}, {Axis::kEmbed})
        .To("decoder.decoder_norm.scale", {e}, {Axis::kEmbed})
        .Then(sdk::Add(1.0f));
  }

  // The tensors of one decoder layer; `suffix` is Gemma2's `_local` /
  // `_global` (empty for Gemma3).
  std::vector<LayerTensor> DecoderLayer(const std::string& suffix) const {
    const int64_t e = d_.embed, nq = d_.heads, nkv = d_.kv_heads, hd = d_.head_dim, f = d_.mlp;
    const std::string attn = "self_attention" + suffix + ".";
    const std::string mlp = "mlp" + suffix + ".";
    std::vector<LayerTensor> t = {
        Norm("input_layernorm.weight", "pre_self_attention_norm" + suffix + ".scale", e,
             Axis::kEmbed),
        Norm("post_attention_layernorm.weight", "post_self_attention_norm" + suffix + ".scale", e,
             Axis::kEmbed),
        Norm("pre_feedforward_layernorm.weight", "pre_ffw_norm" + suffix + ".scale", e,
             Axis::kEmbed),
        Norm("post_feedforward_layernorm.weight", "post_ffw_norm" + suffix + ".scale", e,
             Axis::kEmbed),
        Projection("self_attn.q_proj.weight", {nq * hd, e}, {Axis::kFused, Axis::kEmbed},
                   attn + "query.kernel", {e, nq, hd},
                   {Axis::kEmbed, Axis::kHeads, Axis::kHeadDim}),
        Projection("self_attn.k_proj.weight", {nkv * hd, e}, {Axis::kFused, Axis::kEmbed},
                   attn + "key.kernel", {e, nkv, hd},
                   {Axis::kEmbed, Axis::kKvHeads, Axis::kHeadDim}),
        Projection("self_attn.v_proj.weight", {nkv * hd, e}, {Axis::kFused, Axis::kEmbed},
                   attn + "value.kernel", {e, nkv, hd},
                   {Axis::kEmbed, Axis::kKvHeads, Axis::kHeadDim}),
        Projection("self_attn.o_proj.weight", {e, nq * hd}, {Axis::kEmbed, Axis::kFused},
                   attn + "out.kernel", {nq, hd, e}, {Axis::kHeads, Axis::kHeadDim, Axis::kEmbed}),
        Linear("mlp.gate_proj.weight", mlp + "wi_0.kernel", f, Axis::kMlp, e, Axis::kEmbed),
        Linear("mlp.up_proj.weight", mlp + "wi_1.kernel", f, Axis::kMlp, e, Axis::kEmbed),
        Linear("mlp.down_proj.weight", mlp + "wo.kernel", e, Axis::kEmbed, f, Axis::kMlp),
    };
    if (d_.gemma2()) {
      // MaxText's gemma2 attention does not scale the query at run time; the
      // kernel carries 1/sqrt(head_dim) (MaxText's scale_query_layer, which
      // uses head_dim, not query_pre_attn_scalar).
      const double root = std::sqrt(static_cast<double>(hd));
      t[4].ops.push_back(sdk::Scale(static_cast<float>(1.0 / root), static_cast<float>(root)));
    } else {
      t.push_back(Norm("self_attn.q_norm.weight", attn + "query_norm.scale", hd, Axis::kHeadDim));
      t.push_back(Norm("self_attn.k_norm.weight", attn + "key_norm.scale", hd, Axis::kHeadDim));
    }
    return t;
  }

  // Adds one rule per tensor: stacked over HF layers hf_start + stride * k
  // (k < count) on axis 1 into `mt_prefix`, or (count 0) for the one layer
  // the prefixes name.
  static void Emit(sdk::RuleSet& rules, const std::vector<LayerTensor>& tensors,
                   const std::string& mt_prefix, const std::string& hf_prefix, int64_t count,
                   int64_t hf_start, int64_t stride) {
    for (const LayerTensor& t : tensors) {
      sdk::Rule& rule = rules.Add();
      rule.From(hf_prefix + t.hf, t.hf_dims, t.hf_axes).To(mt_prefix + t.mt, t.mt_dims, t.mt_axes);
      if (count > 0) rule.Stack(Axis::kLayers, 1, count, hf_start, stride);
      for (const sdk::Op& op : t.ops) rule.Then(op);
    }
  }

  void AddGemma2Layers(sdk::RuleSet& rules, bool scan) const {
    const std::string hf = d_.text_prefix() + "layers.";
    const int64_t pairs = d_.layers / 2;
    // Local (sliding-window) layers are the even HF layers, global the odd.
    for (const auto& [suffix, offset] : {std::pair<std::string, int64_t>{"_local", 0},
                                         std::pair<std::string, int64_t>{"_global", 1}}) {
      const std::vector<LayerTensor> tensors = DecoderLayer(suffix);
      if (scan) {
        Emit(rules, tensors, "decoder.layers.", hf + "{layer}.", pairs, offset, 2);
        continue;
      }
      for (int64_t m = 0; m < pairs; ++m) {
        Emit(rules, tensors, "decoder.layers_" + Str(m) + ".", hf + Str(2 * m + offset) + ".", 0, 0,
             0);
      }
    }
  }

  void AddGemma3Layers(sdk::RuleSet& rules, bool scan) const {
    const std::string hf = d_.text_prefix() + "layers.";
    const std::vector<LayerTensor> tensors = DecoderLayer("");
    if (!scan) {
      for (int64_t i = 0; i < d_.layers; ++i) {
        Emit(rules, tensors, "decoder.layers_" + Str(i) + ".", hf + Str(i) + ".", 0, 0, 0);
      }
      return;
    }
    // MaxText scans floor(L/6) whole blocks; with fewer than 6 layers there
    // is no scanned block at all, only the remainder.
    const int64_t repeats = d_.layers / kGemma3Block;
    if (repeats > 0) {
      for (int64_t b = 0; b < kGemma3Block; ++b) {
        Emit(rules, tensors, "decoder.layers.layers_" + Str(b) + ".", hf + "{layer}.", repeats, b,
             kGemma3Block);
      }
    }
    for (int64_t r = 0; r < d_.layers % kGemma3Block; ++r) {
      Emit(rules, tensors, "decoder.layers_remainder.layers_" + Str(r) + ".",
           hf + Str(repeats * kGemma3Block + r) + ".", 0, 0, 0);
    }
  }

  void AddVision(sdk::RuleSet& rules) const {
    const Vision& v = d_.vision;
    const int64_t ev = v.hidden, hv = v.heads, dv = v.head_dim, fv = v.mlp, p = v.patch,
                  c = v.channels, n = v.positions();
    const std::string hf = "model.vision_tower.vision_model.";
    const std::string mt = "vision_encoder.Gemma3VisionEncoderLayer_0.";
    // torch Conv2d [out, in, kh, kw] -> flax Conv [kh, kw, in, out].
    rules.Add()
        .From(hf + "embeddings.patch_embedding.weight", {ev, c, p, p},
              {Axis::kEmbed, Axis::kOther, Axis::kOther, Axis::kOther})
        .To(mt + "embedding.kernel", {p, p, c, ev},
            {Axis::kOther, Axis::kOther, Axis::kOther, Axis::kEmbed})
        .Then(sdk::Transpose({2, 3, 1, 0}));
    rules.Add()
        .From(hf + "embeddings.patch_embedding.bias", {ev}, {Axis::kEmbed})
        .To(mt + "embedding.bias", {ev}, {Axis::kEmbed});
    // MaxText's learned position embedding has a leading batch axis.
    rules.Add()
        .From(hf + "embeddings.position_embedding.weight", {n, ev}, {Axis::kOther, Axis::kEmbed})
        .To(mt + "pos_embedding", {1, n, ev}, {Axis::kOther, Axis::kOther, Axis::kEmbed})
        .Then(sdk::Reshape({1, n, ev}));
    for (const char* part : {"weight", "bias"}) {
      rules.Add()
          .From(hf + "post_layernorm." + part, {ev}, {Axis::kEmbed})
          .To(mt + "Transformer.encoder_norm." + (part == std::string("weight") ? "scale" : "bias"),
              {ev}, {Axis::kEmbed});
    }

    std::vector<LayerTensor> layer = {
        Same("layer_norm1.weight", "LayerNorm_0.scale", ev, Axis::kEmbed),
        Same("layer_norm1.bias", "LayerNorm_0.bias", ev, Axis::kEmbed),
        Same("layer_norm2.weight", "LayerNorm_1.scale", ev, Axis::kEmbed),
        Same("layer_norm2.bias", "LayerNorm_1.bias", ev, Axis::kEmbed),
        Projection("self_attn.out_proj.weight", {ev, ev}, {Axis::kEmbed, Axis::kFused},
                   "MultiHeadDotProductAttention_0.out.kernel", {hv, dv, ev},
                   {Axis::kHeads, Axis::kHeadDim, Axis::kEmbed}),
        Same("self_attn.out_proj.bias", "MultiHeadDotProductAttention_0.out.bias", ev,
             Axis::kEmbed),
        Linear("mlp.fc1.weight", "MlpBlockViT_0.Dense_0.kernel", fv, Axis::kMlp, ev, Axis::kEmbed),
        Same("mlp.fc1.bias", "MlpBlockViT_0.Dense_0.bias", fv, Axis::kMlp),
        Linear("mlp.fc2.weight", "MlpBlockViT_0.Dense_1.kernel", ev, Axis::kEmbed, fv, Axis::kMlp),
        Same("mlp.fc2.bias", "MlpBlockViT_0.Dense_1.bias", ev, Axis::kEmbed),
    };
    for (const auto& [proj, name] :
         {std::pair<const char*, const char*>{"q", "query"}, {"k", "key"}, {"v", "value"}}) {
      const std::string attn_hf = std::string("self_attn.") + proj + "_proj.";
      const std::string attn_mt = std::string("MultiHeadDotProductAttention_0.") + name + ".";
      layer.push_back(Projection(attn_hf + "weight", {ev, ev}, {Axis::kFused, Axis::kEmbed},
                                 attn_mt + "kernel", {ev, hv, dv},
                                 {Axis::kEmbed, Axis::kHeads, Axis::kHeadDim}));
      layer.push_back({attn_hf + "bias",
                       {ev},
                       {Axis::kFused},
                       attn_mt + "bias",
                       {hv, dv},
                       {Axis::kHeads, Axis::kHeadDim},
                       {sdk::Reshape({hv, dv})}});
    }
    for (int64_t i = 0; i < v.layers; ++i) {
      Emit(rules, layer, mt + "Transformer.encoderblock_" + Str(i) + ".",
           hf + "encoder.layers." + Str(i) + ".", 0, 0, 0);
    }

    // The projector into the text model: a plain [Ev, E] matrix (no
    // transpose: HF keeps it as a Parameter, not a Linear) and a Gemma
    // RMSNorm over the vision features.
    const std::string proj_hf = "model.multi_modal_projector.";
    const std::string proj_mt = "vision_encoder.VisionEmbedder_0.";
    rules.Add()
        .From(proj_hf + "mm_input_projection_weight", {ev, d_.embed}, {Axis::kOther, Axis::kEmbed})
        .To(proj_mt + "mm_input_projection.w", {ev, d_.embed}, {Axis::kOther, Axis::kEmbed});
    rules.Add()
        .From(proj_hf + "mm_soft_emb_norm.weight", {ev}, {Axis::kOther})
        .To(proj_mt + "mm_soft_embedding_norm.scale", {ev}, {Axis::kOther})
        .Then(sdk::Add(1.0f));
  }

  json config_;
  Dims d_;
};

// ---------------------------------------------------------------------------
// Presets: the HF config.json of MaxText's model names (MaxText's
// hf_model_configs.py, which builds them from transformers' Gemma2Config /
// Gemma3Config; the sizes agree with configs/models/<name>.yml).

json Gemma2(int64_t hidden, int64_t mlp, int64_t layers, int64_t heads, int64_t kv,
            int64_t head_dim, int64_t query_scalar) {
  return {{"architectures", {"Gemma2ForCausalLM"}},
          {"attention_bias", false},
          {"attention_dropout", 0.0},
          {"attn_logit_softcapping", 50.0},
          {"bos_token_id", 2},
          {"cache_implementation", "hybrid"},
          {"eos_token_id", 1},
          {"final_logit_softcapping", 30.0},
          {"head_dim", head_dim},
          {"hidden_act", "gelu_pytorch_tanh"},
          {"hidden_activation", "gelu_pytorch_tanh"},
          {"hidden_size", hidden},
          {"initializer_range", 0.02},
          {"intermediate_size", mlp},
          {"max_position_embeddings", 8192},
          {"model_type", "gemma2"},
          {"num_attention_heads", heads},
          {"num_hidden_layers", layers},
          {"num_key_value_heads", kv},
          {"pad_token_id", 0},
          {"query_pre_attn_scalar", query_scalar},
          {"rms_norm_eps", 1e-6},
          {"rope_theta", 10000.0},
          {"sliding_window", 4096},
          {"tie_word_embeddings", true},
          {"torch_dtype", "bfloat16"},
          {"use_cache", true},
          {"vocab_size", kGemma2ReleaseVocab}};
}

// MaxText's Gemma3 configs, except rope_theta: MaxText's hard-coded 10000 is
// not what the release uses (transformers' default, 1000000, which MaxText's
// own model yml says too: rope_max_timescale 1_000_000).
json Gemma3(int64_t hidden, int64_t mlp, int64_t layers, int64_t heads, int64_t kv,
            int64_t head_dim, int64_t query_scalar) {
  const json text = {{"attention_bias", false},
                     {"attention_dropout", 0.0},
                     {"attn_logit_softcapping", nullptr},
                     {"cache_implementation", "hybrid"},
                     {"final_logit_softcapping", nullptr},
                     {"head_dim", head_dim},
                     {"hidden_activation", "gelu_pytorch_tanh"},
                     {"hidden_size", hidden},
                     {"initializer_range", 0.02},
                     {"intermediate_size", mlp},
                     {"max_position_embeddings", 131072},
                     {"model_type", "gemma3_text"},
                     {"num_attention_heads", heads},
                     {"num_hidden_layers", layers},
                     {"num_key_value_heads", kv},
                     {"query_pre_attn_scalar", query_scalar},
                     {"rms_norm_eps", 1e-6},
                     {"rope_local_base_freq", 10000.0},
                     {"rope_scaling", {{"factor", 8.0}, {"rope_type", "linear"}}},
                     {"rope_theta", 1000000.0},
                     {"sliding_window", 1024},
                     {"sliding_window_pattern", kGemma3Block},
                     {"use_cache", true},
                     {"vocab_size", kGemma3MaxTextVocab}};
  const json vision = {{"attention_dropout", 0.0},
                       {"hidden_act", "gelu_pytorch_tanh"},
                       {"hidden_size", 1152},
                       {"image_size", 896},
                       {"intermediate_size", 4304},
                       {"layer_norm_eps", 1e-6},
                       {"model_type", "siglip_vision_model"},
                       {"num_attention_heads", 16},
                       {"num_channels", 3},
                       {"num_hidden_layers", 27},
                       {"patch_size", 14},
                       {"vision_use_head", false}};
  return {{"architectures", {"Gemma3ForConditionalGeneration"}},
          {"boi_token_index", 255999},
          {"eoi_token_index", 256000},
          {"eos_token_id", {1, 106}},
          {"image_token_index", 262144},
          {"initializer_range", 0.02},
          {"mm_tokens_per_image", 256},
          {"model_type", "gemma3"},
          {"text_config", text},
          {"torch_dtype", "bfloat16"},
          {"vision_config", vision}};
}

const std::map<std::string, json, std::less<>>& Presets() {
  static const std::map<std::string, json, std::less<>> presets = [] {
    std::map<std::string, json, std::less<>> p;
    p["gemma2-2b"] = Gemma2(2304, 9216, 26, 8, 4, 256, 256);
    p["gemma2-9b"] = Gemma2(3584, 14336, 42, 16, 8, 256, 224);
    p["gemma2-27b"] = Gemma2(4608, 36864, 46, 32, 16, 128, 144);
    p["gemma3-4b"] = Gemma3(2560, 10240, 34, 8, 4, 256, 256);
    p["gemma3-12b"] = Gemma3(3840, 15360, 48, 16, 8, 256, 256);
    p["gemma3-27b"] = Gemma3(5376, 21504, 62, 32, 16, 128, 168);
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

// Tiny configs for `ckptbridge plugins check`: a Gemma2 with two pairs, a
// gemma3_text with one scanned block and a remainder, and a multimodal
// Gemma3 (its vision tower is converted only with --multimodal).
std::vector<sdk::SampleConfig> Samples() {
  const json gemma2 = {{"model_type", "gemma2"},   {"vocab_size", 40},
                       {"hidden_size", 16},        {"intermediate_size", 24},
                       {"num_hidden_layers", 4},   {"num_attention_heads", 4},
                       {"num_key_value_heads", 2}, {"head_dim", 6},
                       {"sliding_window", 8},      {"torch_dtype", "bfloat16"}};
  const json text = {{"model_type", "gemma3_text"}, {"vocab_size", 44},
                     {"hidden_size", 20},           {"intermediate_size", 28},
                     {"num_hidden_layers", 8},      {"num_attention_heads", 4},
                     {"num_key_value_heads", 1},    {"head_dim", 6},
                     {"sliding_window", 8},         {"torch_dtype", "bfloat16"}};
  json multimodal = {{"model_type", "gemma3"},
                     {"text_config", text},
                     {"vision_config",
                      {{"model_type", "siglip_vision_model"},
                       {"hidden_size", 12},
                       {"intermediate_size", 20},
                       {"num_hidden_layers", 2},
                       {"num_attention_heads", 3},
                       {"patch_size", 2},
                       {"image_size", 6}}},
                     {"torch_dtype", "bfloat16"}};
  multimodal["text_config"]["num_hidden_layers"] = 7;
  return {{"gemma2", "base", gemma2},
          {"gemma3_text", "base", text},
          {"gemma3", "multimodal", multimodal}};
}

sdk::PluginDefinition Describe() {
  sdk::PluginDefinition d;
  d.name = "gemma";
  d.version = CKPTBRIDGE_PLUGIN_VERSION;
  d.description =
      "Gemma2 and Gemma3, text and (with --multimodal) the SigLIP vision tower (MaxText decoder "
      "blocks gemma2, gemma3)";
  for (const FamilyInfo& info : kFamilies) {
    d.model_types.emplace_back(info.model_type);
    d.architectures.emplace_back(info.architecture);
  }
  for (const auto& [name, config] : Presets()) d.model_presets.push_back(name);
  d.flags = CKB_PLUGIN_THREAD_SAFE_ADAPTERS;
  d.create = [](std::string_view model_type, const sdk::Config& config) {
    return std::make_unique<GemmaAdapter>(model_type, config);
  };
  d.preset = &Preset;
  d.samples = Samples();
  return d;
}

}  // namespace

CKPTBRIDGE_PLUGIN(Describe)
