// tests/sdk/plugins/faulty_plugin.cc - plugins built with the SDK helpers
// that load fine but are wrong in one way each, for the conformance kit's
// and the host's tests. Each copy is compiled with one FAULTY_* macro (none:
// a correct plugin):
//
//   FAULTY_DUP_PATH       two rules write the same MaxText path
//   FAULTY_TEMPLATE       an HF template with an unknown placeholder {lyr}
//   FAULTY_CHAIN          an op chain whose output shape is not the MaxText one
//   FAULTY_AXES           the embed axis declared with two different sizes
//   FAULTY_RULE_AXES      an HF axis declared "layers" in a rule stacking
//                         another number of layers
//   FAULTY_RULES_THROW    Rules() throws a std::runtime_error
//   FAULTY_CUSTOM_FAILS   the custom transform reports an error
//   FAULTY_MISSING        the to-HF rules read a MaxText tensor nobody writes
//   FAULTY_NOT_EXACT      the custom transform and its to-HF rule disagree
//   FAULTY_NO_SAMPLE      a second model type without a sample config
//   FAULTY_NEEDS_NEWER    requires ABI minor CKPTBRIDGE_ABI_MINOR + 1
//   FAULTY_SAMPLE_TYPE    a sample config for a model type it does not serve
//   FAULTY_SAMPLE_DUP     two sample configs with one variant label
//
// Family "faulty": embedding [V, E] and, per layer, `w` [E, E] (transposed)
// and `c` [E, E] (to MaxText by a custom transform that transposes, back by a
// Transpose op).
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "ckptbridge/sdk/plugin.hpp"

namespace {

namespace sdk = ckptbridge::sdk;
using sdk::Axis;

class FaultyAdapter final : public sdk::Adapter {
 public:
  explicit FaultyAdapter(const sdk::Config& config)
      : config_(config.json()),
        vocab_(config.Dim("vocab_size")),
        e_(config.Dim("hidden_size")),
        layers_(config.Dim("num_hidden_layers")) {}

  void Rules(const sdk::RuleOptions& options, sdk::RuleSet& rules) const override {
#ifdef FAULTY_RULES_THROW
    throw std::runtime_error("faulty: rules exploded for layer 7");
#endif
    const bool to_hf = options.direction == sdk::Direction::kToHf;
    rules.Add()
        .From("model.embed_tokens.weight", {vocab_, e_}, {Axis::kVocab, Axis::kEmbed})
#ifdef FAULTY_AXES
        .To("token_embedder.embedding", {vocab_, e_}, {Axis::kEmbed, Axis::kVocab});
#else
        .To("token_embedder.embedding", {vocab_, e_}, {Axis::kVocab, Axis::kEmbed});
#endif
    for (int64_t i = 0; i < (options.scan_layers ? 1 : layers_); ++i) {
      const std::string hf =
          options.scan_layers ? "model.layers.{layer}." : "model.layers." + std::to_string(i) + ".";
      const std::string mt =
          options.scan_layers ? "decoder.layers." : "decoder.layers_" + std::to_string(i) + ".";
#ifdef FAULTY_TEMPLATE
      const std::string w_name = options.scan_layers ? "model.layers.{lyr}.w" : hf + "w";
#else
      const std::string w_name = hf + "w";
#endif
      sdk::Rule& w = rules.Add()
                         .From(w_name, {e_, e_}, {Axis::kMlp, Axis::kEmbed})
                         .To(mt + "w.kernel", {e_, e_}, {Axis::kEmbed, Axis::kMlp});
      if (options.scan_layers) w.Stack(Axis::kLayers, 1, layers_);
#ifdef FAULTY_CHAIN
      w.Then(sdk::Reshape({e_ * e_}));
#else
      w.Then(sdk::Transpose({1, 0}));
#endif

#ifdef FAULTY_RULE_AXES
      sdk::Rule& c = rules.Add().From(hf + "c", {e_, e_}, {Axis::kLayers, Axis::kEmbed});
#else
      sdk::Rule& c = rules.Add().From(hf + "c", {e_, e_}, {Axis::kMlp, Axis::kEmbed});
#endif
#ifdef FAULTY_DUP_PATH
      c.To(mt + "w.kernel", {e_, e_}, {Axis::kEmbed, Axis::kMlp});
#else
      c.To(mt + "c.kernel", {e_, e_}, {Axis::kEmbed, Axis::kMlp});
#endif
      if (options.scan_layers) c.Stack(Axis::kLayers, 1, layers_);
      if (to_hf) {
        c.Then(sdk::Transpose({1, 0}));
      } else {
        c.Then(sdk::Custom(7, {e_, e_}));
      }
#ifdef FAULTY_MISSING
      if (to_hf) {
        sdk::Rule& ghost = rules.Add()
                               .From(hf + "ghost", {e_}, {Axis::kEmbed})
                               .To(mt + "ghost.scale", {e_}, {Axis::kEmbed});
        if (options.scan_layers) ghost.Stack(Axis::kLayers, 1, layers_);
      }
#endif
    }
  }

  nlohmann::json MaxTextConfig() const override { return {{"base_emb_dim", e_}}; }
  nlohmann::json HfConfig() const override {
    nlohmann::json out = config_;
    out["model_type"] = config_.value("model_type", "faulty");
    return out;
  }

  // Custom 7: transpose an [E, E] bf16/f32 input into the f32 output.
  void ApplyCustom(int32_t id, const std::vector<sdk::TensorView>& inputs,
                   const std::vector<sdk::TensorView>& outputs) const override {
#ifdef FAULTY_CUSTOM_FAILS
    (void)inputs;
    (void)outputs;
    sdk::Fail(CKB_FAILED_PRECONDITION,
              "custom transform " + std::to_string(id) + ": faulty scale tensor missing");
#else
    if (id != 7) sdk::Fail(CKB_NOT_FOUND, "unknown custom transform " + std::to_string(id));
    const sdk::TensorView& in = inputs.at(0);
    auto* out = static_cast<float*>(outputs.at(0).data);
    for (int64_t r = 0; r < e_; ++r) {
      for (int64_t col = 0; col < e_; ++col) {
        float v;
        if (in.dtype == CKB_DTYPE_F32) {
          v = static_cast<const float*>(in.data)[r * e_ + col];
        } else {
          uint32_t bits = uint32_t{static_cast<const uint16_t*>(in.data)[r * e_ + col]} << 16;
          std::memcpy(&v, &bits, sizeof v);
        }
#ifdef FAULTY_NOT_EXACT
        if (r == 0 && col == 1) v = -v;
#endif
        out[col * e_ + r] = v;
      }
    }
#endif
  }

 private:
  nlohmann::json config_;
  int64_t vocab_, e_, layers_;
};

nlohmann::json Sample(const char* model_type) {
  return {{"model_type", model_type},
          {"vocab_size", 12},
          {"hidden_size", 4},
          {"num_hidden_layers", 2},
          {"torch_dtype", "bfloat16"}};
}

sdk::PluginDefinition Describe() {
  sdk::PluginDefinition d;
  d.name = "faulty";
  d.version = CKPTBRIDGE_PLUGIN_VERSION;
  d.description = "a plugin with one defect per build";
  d.model_types = {"faulty"};
#ifdef FAULTY_NO_SAMPLE
  d.model_types.push_back("faulty_moe");
#endif
  d.create = [](std::string_view, const sdk::Config& config) {
    return std::make_unique<FaultyAdapter>(config);
  };
  d.samples = {{"faulty", "base", Sample("faulty")}};
#ifdef FAULTY_SAMPLE_TYPE
  d.samples.push_back({"faulty_moe", "base", Sample("faulty_moe")});
#endif
#ifdef FAULTY_SAMPLE_DUP
  d.samples.push_back({"faulty", "base", Sample("faulty")});
#endif
#ifdef FAULTY_NEEDS_NEWER
  d.abi_minor = CKPTBRIDGE_ABI_MINOR + 1;
#endif
  return d;
}

}  // namespace

CKPTBRIDGE_PLUGIN(Describe)
