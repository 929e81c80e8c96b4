// wren_plugin.cc - a complete ckptbridge adapter for "wren", a made-up
// decoder-only family, written only against the installed SDK headers.
//
// HF (config.json: model_type "wren")           MaxText (scanned: layers on axis 1)
//   model.embed_tokens.weight      [V, E]         token_embedder.embedding      [V, E]
//   model.norm.weight              [E]            decoder.decoder_norm.scale    [E]
//   lm_head.weight                 [V, E]         decoder.logits_dense.kernel   [E, V]  (untied
//   only) model.layers.i.input_norm.weight [E]          decoder.layers.pre_norm.scale [E]
//   model.layers.i.attn.qkv_proj.weight [3*N*D, E]
//                                  -> decoder.layers.attention.{query,key,value}.kernel [E, N, D]
//   model.layers.i.attn.o_proj.weight [E, N*D]    decoder.layers.attention.out.kernel [N, D, E]
//   model.layers.i.mlp.up_proj.weight [F, E]      decoder.layers.mlp.wi.kernel  [E, F]
//   model.layers.i.mlp.down_proj.weight [F/B, E, B] (stored in blocks of B rows)
//                                  -> decoder.layers.mlp.wo.kernel  [F, E]
//
// It shows each kind of rule once:
//  - plain copies (embedding, norms);
//  - one op chain: the fused qkv projection is transposed, reshaped to heads
//    and split into three MaxText tensors;
//  - one layer group, stacked on MaxText axis 1 when scan_layers is on, one
//    rule per layer (`decoder.layers_<i>`) when it is off;
//  - one custom transform: wren checkpoints store down_proj in row blocks,
//    which the plugin unpacks itself (Adapter::ApplyCustom). A custom op has no
//    inverse the host could derive, so the MaxText -> HF direction gets its
//    own rule, made of ordinary ops that re-block the rows; the conformance
//    kit proves the two agree bit for bit.
//  - an ignored tensor: with tie_word_embeddings a stray lm_head is skipped;
//  - sample configs (ABI 1.1), from which `ckptbridge plugins check`
//    synthesizes checkpoints and converts them both ways.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ckptbridge/sdk/plugin.hpp"

namespace {

namespace sdk = ckptbridge::sdk;
using nlohmann::json;
using sdk::Axis;

constexpr int32_t kUnblockDownProj = 1;  // the custom transform's id

struct Dims {
  int64_t vocab, embed, mlp, layers, heads, head_dim, block;
  bool tied;
};

Dims ReadDims(const sdk::Config& c) {
  Dims d{};
  d.vocab = c.Dim("vocab_size");
  d.embed = c.Dim("hidden_size");
  d.mlp = c.Dim("intermediate_size");
  d.layers = c.Dim("num_hidden_layers");
  d.heads = c.Dim("num_attention_heads");
  d.head_dim = c.Has("head_dim") ? c.Dim("head_dim") : d.embed / d.heads;
  d.block = c.Has("down_proj_block") ? c.Dim("down_proj_block") : d.mlp;
  d.tied = c.Bool("tie_word_embeddings", false);
  if (d.mlp % d.block != 0) {
    sdk::Fail(CKB_INVALID_ARGUMENT, "config.json: intermediate_size " + std::to_string(d.mlp) +
                                        " is not a multiple of down_proj_block " +
                                        std::to_string(d.block));
  }
  return d;
}

// Element i of a host-owned input as f32 (wren checkpoints are bf16 or f32).
float Load(const sdk::TensorView& t, int64_t i) {
  if (t.dtype == CKB_DTYPE_F32) return static_cast<const float*>(t.data)[i];
  const uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(t.data)[i]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

class WrenAdapter final : public sdk::Adapter {
 public:
  WrenAdapter(std::string_view model_type, const sdk::Config& config)
      : model_type_(model_type), config_(config.json()), d_(ReadDims(config)) {}

  void Rules(const sdk::RuleOptions& options, sdk::RuleSet& rules) const override {
    const int64_t v = d_.vocab, e = d_.embed;
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
    // The layer group: written once, expanded for scanned or unscanned output.
    if (options.scan_layers) {
      LayerRules(rules, options.direction, "model.layers.{layer}.", "decoder.layers.", true);
    } else {
      for (int64_t i = 0; i < d_.layers; ++i) {
        LayerRules(rules, options.direction, "model.layers." + std::to_string(i) + ".",
                   "decoder.layers_" + std::to_string(i) + ".", false);
      }
    }
  }

  json MaxTextConfig() const override {
    return {{"base_emb_dim", d_.embed},
            {"base_mlp_dim", d_.mlp},
            {"base_num_decoder_layers", d_.layers},
            {"base_num_query_heads", d_.heads},
            {"base_num_kv_heads", d_.heads},
            {"head_dim", d_.head_dim},
            {"vocab_size", d_.vocab},
            {"logits_via_embedding", d_.tied}};
  }

  json HfConfig() const override {
    json out = config_;
    out["model_type"] = model_type_;
    if (!out.contains("architectures")) out["architectures"] = {"WrenForCausalLM"};
    return out;
  }

  // down_proj, HF [F/B, E, B] (row r of the MaxText [F, E] kernel lives in
  // block r / B, column r % B) -> MaxText [F, E].
  void ApplyCustom(int32_t id, const std::vector<sdk::TensorView>& inputs,
                   const std::vector<sdk::TensorView>& outputs) const override {
    if (id != kUnblockDownProj) {
      sdk::Fail(CKB_NOT_FOUND, "unknown custom transform " + std::to_string(id));
    }
    const sdk::TensorView& in = inputs.at(0);
    const sdk::TensorView& out = outputs.at(0);
    if (in.dtype != CKB_DTYPE_BF16 && in.dtype != CKB_DTYPE_F32) {
      sdk::Fail(CKB_UNSUPPORTED, "down_proj: wren stores bfloat16 or float32, got dtype " +
                                     std::to_string(in.dtype));
    }
    const int64_t blocks = d_.mlp / d_.block, e = d_.embed, b = d_.block;
    if (in.dims != sdk::Dims{blocks, e, b} || out.dims != sdk::Dims{d_.mlp, e}) {
      sdk::Fail(CKB_INVALID_ARGUMENT, "down_proj: unexpected shapes");
    }
    auto* dst = static_cast<float*>(out.data);
    for (int64_t blk = 0; blk < blocks; ++blk) {
      for (int64_t col = 0; col < e; ++col) {
        for (int64_t j = 0; j < b; ++j) {
          dst[(blk * b + j) * e + col] = Load(in, (blk * e + col) * b + j);
        }
      }
    }
  }

 private:
  // The rules of one layer (or, with `stacked`, of all layers at once).
  void LayerRules(sdk::RuleSet& rules, sdk::Direction direction, const std::string& hf,
                  const std::string& mt, bool stacked) const {
    const int64_t e = d_.embed, n = d_.heads, hd = d_.head_dim, f = d_.mlp, b = d_.block;
    auto add = [&]() -> sdk::Rule& { return rules.Add(); };
    auto stack = [&](sdk::Rule& rule) {
      if (stacked) rule.Stack(Axis::kLayers, /*mt_axis=*/1, d_.layers);
    };

    sdk::Rule& norm = add()
                          .From(hf + "input_norm.weight", {e}, {Axis::kEmbed})
                          .To(mt + "pre_norm.scale", {e}, {Axis::kEmbed});
    stack(norm);

    // The op chain: [3*N*D, E] -> transpose [E, 3*N*D] -> reshape [E, 3N, D]
    // -> split on axis 1 into query, key, value [E, N, D].
    const sdk::Axes heads = {Axis::kEmbed, Axis::kHeads, Axis::kHeadDim};
    sdk::Rule& qkv =
        add()
            .From(hf + "attn.qkv_proj.weight", {3 * n * hd, e}, {Axis::kFused, Axis::kEmbed})
            .To(mt + "attention.query.kernel", {e, n, hd}, heads)
            .To(mt + "attention.key.kernel", {e, n, hd}, heads)
            .To(mt + "attention.value.kernel", {e, n, hd}, heads);
    stack(qkv);
    qkv.Then(sdk::Transpose({1, 0}))
        .Then(sdk::Reshape({e, 3 * n, hd}))
        .Then(sdk::Split(1, {n, n, n}));

    sdk::Rule& out = add()
                         .From(hf + "attn.o_proj.weight", {e, n * hd}, {Axis::kEmbed, Axis::kFused})
                         .To(mt + "attention.out.kernel", {n, hd, e},
                             {Axis::kHeads, Axis::kHeadDim, Axis::kEmbed});
    stack(out);
    out.Then(sdk::Transpose({1, 0})).Then(sdk::Reshape({n, hd, e}));

    sdk::Rule& up = add()
                        .From(hf + "mlp.up_proj.weight", {f, e}, {Axis::kMlp, Axis::kEmbed})
                        .To(mt + "mlp.wi.kernel", {e, f}, {Axis::kEmbed, Axis::kMlp});
    stack(up);
    up.Then(sdk::Transpose({1, 0}));

    sdk::Rule& down = add()
                          .From(hf + "mlp.down_proj.weight", {f / b, e, b},
                                {Axis::kOther, Axis::kEmbed, Axis::kOther})
                          .To(mt + "mlp.wo.kernel", {f, e}, {Axis::kMlp, Axis::kEmbed});
    stack(down);
    if (direction == sdk::Direction::kToMaxText) {
      // What no op says directly, done by the plugin (ApplyCustom).
      down.Then(sdk::Custom(kUnblockDownProj, {f, e}));
    } else {
      // The same mapping as ops, which the host inverts to write HF blocks:
      // [F/B, E, B] -> transpose [F/B, B, E] -> reshape [F, E].
      down.Then(sdk::Transpose({0, 2, 1})).Then(sdk::Reshape({f, e}));
    }
  }

  std::string model_type_;
  json config_;
  Dims d_;
};

json TinyConfig(bool tied) {
  return {{"architectures", {"WrenForCausalLM"}},
          {"model_type", "wren"},
          {"vocab_size", 48},
          {"hidden_size", 16},
          {"intermediate_size", 24},
          {"down_proj_block", 8},
          {"num_hidden_layers", tied ? 3 : 2},
          {"num_attention_heads", 2},
          {"head_dim", 8},
          {"rms_norm_eps", 1e-6},
          {"tie_word_embeddings", tied},
          {"torch_dtype", "bfloat16"}};
}

sdk::PluginDefinition Describe() {
  sdk::PluginDefinition d;
  d.name = "wren";
  d.version = CKPTBRIDGE_PLUGIN_VERSION;  // ckptbridge_add_plugin(... VERSION)
  d.description = "Wren, a made-up family: the SDK's example plugin";
  d.model_types = {"wren"};
  d.architectures = {"WrenForCausalLM"};
  d.model_presets = {"wren-tiny"};
  d.flags = CKB_PLUGIN_THREAD_SAFE_ADAPTERS;  // ApplyCustom keeps no state
  d.create = [](std::string_view model_type, const sdk::Config& config) {
    return std::make_unique<WrenAdapter>(model_type, config);
  };
  d.preset = [](std::string_view name) -> json {
    if (name == "wren-tiny") return TinyConfig(false);
    sdk::Fail(CKB_NOT_FOUND, "unknown model '" + std::string(name) + "'");
  };
  // One sample per structurally different variant: untied and tied output.
  d.samples = {{"wren", "untied", TinyConfig(false)}, {"wren", "tied", TinyConfig(true)}};
  return d;
}

}  // namespace

CKPTBRIDGE_PLUGIN(Describe)
