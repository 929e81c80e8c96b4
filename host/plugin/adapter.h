// host/plugin/adapter.h - the host's C++ face of one plugin adapter.
//
// Wraps a plugin's `ckb_adapter` and function table: every call goes through
// the C boundary with an error sink, and every failure comes back as a Status
// whose message starts with "plugin '<name>': ". Results are copied into host
// memory (RuleSet, std::string) during the plugin's callbacks, and checked:
// struct sizes, dtype and op kinds the host knows, ranks that match the axis
// meanings, non-empty names.
#ifndef CKPTBRIDGE_HOST_PLUGIN_ADAPTER_H_
#define CKPTBRIDGE_HOST_PLUGIN_ADAPTER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "host/base/dtype.h"
#include "host/base/shape.h"
#include "host/base/status.h"
#include "host/plugin/loader.h"
#include "host/plugin/rules.h"

namespace ckptbridge {

// A tensor handed to a custom transform: host-owned, C-contiguous.
struct TensorRef {
  DType dtype = DType::kInvalid;
  Shape dims;
  void* data = nullptr;
};

class Adapter {
 public:
  // Creates an adapter of `plugin` for `model_type` configured by the HF
  // config.json text.
  static Result<std::unique_ptr<Adapter>> Create(const LoadedPlugin& plugin,
                                                 std::string_view model_type,
                                                 std::string_view hf_config_json);
  ~Adapter();
  Adapter(const Adapter&) = delete;
  Adapter& operator=(const Adapter&) = delete;

  const LoadedPlugin& plugin() const { return plugin_; }

  // The rules for one conversion; `options_json` as documented in
  // plugin_abi.h (direction, scan_layers).
  Result<RuleSet> Rules(std::string_view options_json) const;

  // CKB_TO_MAXTEXT: MaxText model settings (JSON object text);
  // CKB_TO_HF: the HF config.json to write on export.
  Result<std::string> TranslateConfig(int32_t direction) const;

  // Runs custom transform `custom_id`; outputs are F32 and preallocated.
  Status ApplyCustom(int32_t custom_id, const std::vector<TensorRef>& inputs,
                     const std::vector<TensorRef>& outputs) const;

 private:
  Adapter(const LoadedPlugin& plugin, ckb_adapter* handle) : plugin_(plugin), handle_(handle) {}

  LoadedPlugin plugin_;
  ckb_adapter* handle_;
};

// The HF config.json text of MaxText model `model_name` from `plugin`'s
// presets; NotFound if the plugin does not know it.
Result<std::string> PresetConfig(const LoadedPlugin& plugin, std::string_view model_name);

}  // namespace ckptbridge

#endif  // CKPTBRIDGE_HOST_PLUGIN_ADAPTER_H_
