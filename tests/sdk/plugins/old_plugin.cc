// tests/sdk/plugins/old_plugin.cc - a plugin built against the frozen ABI 1.0
// SDK (tests/sdk/abi_v1_0), standing for a third-party binary released before
// ABI 1.1. Family "oldfam": an embedding, a final norm and one stacked layer
// weight; no sample configs (the field did not exist yet).
#include <memory>
#include <string_view>

#include "ckptbridge/sdk/plugin.hpp"

#if CKPTBRIDGE_ABI_MINOR != 0
#error "old_plugin.cc must be built against the frozen ABI 1.0 headers"
#endif

namespace {

namespace sdk = ckptbridge::sdk;
using sdk::Axis;

class OldAdapter final : public sdk::Adapter {
 public:
  explicit OldAdapter(const sdk::Config& config)
      : config_(config.json()),
        vocab_(config.Dim("vocab_size")),
        embed_(config.Dim("hidden_size")),
        layers_(config.Dim("num_hidden_layers")) {}

  void Rules(const sdk::RuleOptions& options, sdk::RuleSet& rules) const override {
    rules.Add()
        .From("model.embed_tokens.weight", {vocab_, embed_}, {Axis::kVocab, Axis::kEmbed})
        .To("token_embedder.embedding", {vocab_, embed_}, {Axis::kVocab, Axis::kEmbed});
    rules.Add()
        .From("model.norm.weight", {embed_}, {Axis::kEmbed})
        .To("decoder.decoder_norm.scale", {embed_}, {Axis::kEmbed});
    if (options.scan_layers) {
      rules.Add()
          .From("model.layers.{layer}.proj.weight", {embed_, embed_})
          .To("decoder.layers.proj.kernel", {embed_, embed_})
          .Stack(Axis::kLayers, 1, layers_)
          .Then(sdk::Transpose({1, 0}));
    } else {
      for (int64_t i = 0; i < layers_; ++i) {
        rules.Add()
            .From("model.layers." + std::to_string(i) + ".proj.weight", {embed_, embed_})
            .To("decoder.layers_" + std::to_string(i) + ".proj.kernel", {embed_, embed_})
            .Then(sdk::Transpose({1, 0}));
      }
    }
  }
  nlohmann::json MaxTextConfig() const override { return {{"base_emb_dim", embed_}}; }
  nlohmann::json HfConfig() const override { return config_; }

 private:
  nlohmann::json config_;
  int64_t vocab_, embed_, layers_;
};

sdk::PluginDefinition Describe() {
  sdk::PluginDefinition d;
  d.name = "oldfam";
  d.version = CKPTBRIDGE_PLUGIN_VERSION;
  d.description = "built against the ABI 1.0 SDK";
  d.model_types = {"oldfam"};
  d.create = [](std::string_view, const sdk::Config& config) {
    return std::make_unique<OldAdapter>(config);
  };
  return d;
}

}  // namespace

CKPTBRIDGE_PLUGIN(Describe)
