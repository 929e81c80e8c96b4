// tests/check/plugins - a small family with planted mapping bugs, for verify.
//
// model_type "planted". config.json says which bug to plant ("planted_bug"):
//
//   none        a correct mapping
//   transpose   mlp.down_proj [E, F] -> mlp.wo.kernel [F, E] without the
//               transpose (E == F: the shapes agree, the matrix is wrong)
//   gate_up     the fused mlp.gate_up_proj [2F, E] (gate rows first) cut into
//               halves, the gate half written to wi_1 and the up half to wi_0
//   heads       q_proj rows regrouped so that MaxText's query heads come in
//               the order 0, 2, 4, ..., 1, 3, 5, ... (a wrong head reshape)
//   fp8         the FP8 weight mlp.extra_proj (with block scales
//               weight_scale_inv) dequantized without applying the scales
//
// Each bug is applied by the rules (or the custom transform) in both
// directions, so a round trip through this plugin is symmetric and
// comparing values alone cannot see it; verify's axis fingerprints must.
//
//   HF                                     MaxText (layers stacked on axis 1)
//   model.embed_tokens.weight [V, E]       token_embedder.embedding [V, E]
//   model.norm.weight [E]                  decoder.decoder_norm.scale [E]
//   layers.i.self_attn.q_proj [Nq*D, E]    layers.self_attention.query.kernel [E, Nq, D]
//                                          (scaled by 1/sqrt(D))
//   layers.i.mlp.gate_up_proj [2F, E]      layers.mlp.wi_0.kernel, wi_1.kernel [E, F]
//   layers.i.mlp.down_proj [E, F]          layers.mlp.wo.kernel [F, E]
//   layers.i.mlp.extra_proj [F, E] FP8     layers.mlp.extra.kernel [E, F]   (when "fp8")
//     + weight_scale_inv [F/b, E/b]
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "ckptbridge/sdk/plugin.hpp"

namespace {

namespace sdk = ckptbridge::sdk;
using nlohmann::json;
using sdk::Axis;

constexpr int32_t kDequant = 1;

float E4m3ToFloat(uint8_t b) {
  const int sign = b >> 7, exp = (b >> 3) & 0xf, man = b & 7;
  float v;
  if (exp == 0xf && man == 7) return NAN;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(man) / 8.0f, -6);
  } else {
    v = std::ldexp(1.0f + static_cast<float>(man) / 8.0f, exp - 7);
  }
  return sign ? -v : v;
}

class PlantedAdapter final : public sdk::Adapter {
 public:
  explicit PlantedAdapter(const sdk::Config& c) : config_(c.json()) {
    v_ = c.Dim("vocab_size");
    e_ = c.Dim("hidden_size");
    f_ = c.Dim("intermediate_size");
    layers_ = c.Dim("num_hidden_layers");
    heads_ = c.Dim("num_attention_heads");
    head_dim_ = c.Dim("head_dim");
    bug_ = config_.value("planted_bug", std::string("none"));
    fp8_ = config_.value("fp8", false);
    block_ = config_.value("fp8_block", 16);
  }

  void Rules(const sdk::RuleOptions& options, sdk::RuleSet& rules) const override {
    if (!options.scan_layers) sdk::Fail(CKB_UNSUPPORTED, "the planted family is scanned only");
    const int64_t e = e_, f = f_, nq = heads_, d = head_dim_;
    rules.Add()
        .From("model.embed_tokens.weight", {v_, e}, {Axis::kVocab, Axis::kEmbed})
        .To("token_embedder.embedding", {v_, e}, {Axis::kVocab, Axis::kEmbed});
    rules.Add()
        .From("model.norm.weight", {e}, {Axis::kEmbed})
        .To("decoder.decoder_norm.scale", {e}, {Axis::kEmbed});

    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    const float unscale = static_cast<float>(std::sqrt(static_cast<double>(d)));
    sdk::Rule& q = rules.Add();
    q.From("model.layers.{layer}.self_attn.q_proj.weight", {nq * d, e},
           {Axis::kFused, Axis::kEmbed})
        .To("decoder.layers.self_attention.query.kernel", {e, nq, d},
            {Axis::kEmbed, Axis::kHeads, Axis::kHeadDim})
        .Stack(Axis::kLayers, 1, layers_);
    if (bug_ == "heads") {
      // Rows regrouped as [nq/2, 2, d] -> [2, nq/2, d]: head h of MaxText is
      // HF head 2h (first half) or 2(h - nq/2) + 1.
      q.Then(sdk::Reshape({nq / 2, 2, d * e}))
          .Then(sdk::Transpose({1, 0, 2}))
          .Then(sdk::Reshape({nq * d, e}));
    }
    q.Then(sdk::Transpose({1, 0})).Then(sdk::Reshape({e, nq, d})).Then(sdk::Scale(scale, unscale));

    sdk::Rule& gate_up = rules.Add();
    gate_up.From("model.layers.{layer}.mlp.gate_up_proj.weight", {2 * f, e},
                 {Axis::kMlp, Axis::kEmbed});
    const char* first =
        bug_ == "gate_up" ? "decoder.layers.mlp.wi_1.kernel" : "decoder.layers.mlp.wi_0.kernel";
    const char* second =
        bug_ == "gate_up" ? "decoder.layers.mlp.wi_0.kernel" : "decoder.layers.mlp.wi_1.kernel";
    gate_up.To(first, {e, f}, {Axis::kEmbed, Axis::kMlp})
        .To(second, {e, f}, {Axis::kEmbed, Axis::kMlp})
        .Stack(Axis::kLayers, 1, layers_)
        .Then(sdk::Transpose({1, 0}))
        .Then(sdk::Split(1, {f, f}));

    sdk::Rule& down = rules.Add();
    down.From("model.layers.{layer}.mlp.down_proj.weight", {e, f}, {Axis::kEmbed, Axis::kMlp})
        .To("decoder.layers.mlp.wo.kernel", {f, e}, {Axis::kMlp, Axis::kEmbed})
        .Stack(Axis::kLayers, 1, layers_);
    if (bug_ != "transpose") down.Then(sdk::Transpose({1, 0}));

    if (fp8_) {
      sdk::Rule& extra = rules.Add();
      extra.From("model.layers.{layer}.mlp.extra_proj.weight", {f, e}, {Axis::kMlp, Axis::kEmbed});
      if (options.direction == sdk::Direction::kToMaxText) {
        extra.From("model.layers.{layer}.mlp.extra_proj.weight_scale_inv",
                   {(f + block_ - 1) / block_, (e + block_ - 1) / block_},
                   {Axis::kOther, Axis::kOther});
        extra.Then(sdk::Custom(kDequant, {f, e})).Lossy();
      }
      extra.To("decoder.layers.mlp.extra.kernel", {e, f}, {Axis::kEmbed, Axis::kMlp})
          .Stack(Axis::kLayers, 1, layers_)
          .Then(sdk::Transpose({1, 0}));
    }
  }

  void ApplyCustom(int32_t id, const std::vector<sdk::TensorView>& in,
                   const std::vector<sdk::TensorView>& out) const override {
    if (id != kDequant) sdk::Fail(CKB_NOT_FOUND, "unknown custom transform");
    const auto* w = static_cast<const uint8_t*>(in[0].data);
    const auto* s = static_cast<const float*>(in[1].data);
    auto* o = static_cast<float*>(out[0].data);
    const int64_t rows = in[0].dims[0], cols = in[0].dims[1], scols = in[1].dims[1];
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const float scale = bug_ == "fp8" ? 1.0f : s[(r / block_) * scols + c / block_];
        o[r * cols + c] = E4m3ToFloat(w[r * cols + c]) * scale;
      }
    }
  }

  json MaxTextConfig() const override { return {{"base_emb_dim", e_}}; }
  json HfConfig() const override {
    json out = config_;
    out.erase("fp8_block");
    return out;
  }

 private:
  json config_;
  int64_t v_, e_, f_, layers_, heads_, head_dim_;
  std::string bug_;
  bool fp8_ = false;
  int64_t block_ = 16;
};

sdk::PluginDefinition Describe() {
  sdk::PluginDefinition d;
  d.name = "planted";
  d.version = CKPTBRIDGE_PLUGIN_VERSION;
  d.description = "Test family with planted mapping bugs (tests/check)";
  d.model_types = {"planted"};
  d.architectures = {"PlantedForCausalLM"};
  d.flags = CKB_PLUGIN_THREAD_SAFE_ADAPTERS;
  d.create = [](std::string_view, const sdk::Config& config) {
    return std::make_unique<PlantedAdapter>(config);
  };
  return d;
}

}  // namespace

CKPTBRIDGE_PLUGIN(Describe)
