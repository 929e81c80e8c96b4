// The test plugin of the precision policy (tests/engine/precision_test.cc),
// written with the SDK helpers as a third party would: family "precision",
// two tensors, one of them kept in float32 by its rule (Rule::KeepF32, ABI
// 1.2). Sizes come from config.json: `rows`, `cols`, `heads`.
//
//   HF                           MaxText
//   model.w.weight   [rows, cols]  w.kernel [cols, rows]  (transposed; --save-dtype)
//   model.a_log      [heads]       a_log    [heads]       (always float32)
#include <memory>
#include <string_view>

#include "ckptbridge/sdk/plugin.hpp"

namespace {

namespace sdk = ckptbridge::sdk;
using nlohmann::json;
using sdk::Axis;

class PrecisionAdapter final : public sdk::Adapter {
 public:
  explicit PrecisionAdapter(const sdk::Config& config)
      : config_(config.json()),
        rows_(config.Dim("rows")),
        cols_(config.Dim("cols")),
        heads_(config.Dim("heads")) {}

  void Rules(const sdk::RuleOptions&, sdk::RuleSet& rules) const override {
    rules.Add()
        .From("model.w.weight", {rows_, cols_}, {Axis::kMlp, Axis::kEmbed})
        .To("w.kernel", {cols_, rows_}, {Axis::kEmbed, Axis::kMlp})
        .Then(sdk::Transpose({1, 0}));
    rules.Add()
        .From("model.a_log", {heads_}, {Axis::kOther})
        .To("a_log", {heads_}, {Axis::kOther})
        .KeepF32();
  }

  json MaxTextConfig() const override { return {{"rows", rows_}, {"cols", cols_}}; }

  json HfConfig() const override { return config_; }

 private:
  json config_;
  int64_t rows_, cols_, heads_;
};

sdk::PluginDefinition Describe() {
  sdk::PluginDefinition d;
  d.name = "precision";
  d.version = CKPTBRIDGE_PLUGIN_VERSION;
  d.description = "test plugin: a rule that keeps its tensor in float32";
  d.model_types = {"precision"};
  d.architectures = {"PrecisionForCausalLM"};
  d.abi_minor = 2;  // Rule::KeepF32
  d.flags = CKB_PLUGIN_THREAD_SAFE_ADAPTERS;
  d.create = [](std::string_view, const sdk::Config& config) {
    return std::make_unique<PrecisionAdapter>(config);
  };
  return d;
}

}  // namespace

CKPTBRIDGE_PLUGIN(Describe)
