// ckptbridge/sdk/plugin.hpp - a whole plugin in ordinary C++.
//
// A plugin author writes an Adapter subclass (rules and config translation
// for one HF config.json), a function describing the plugin, and one line
// that emits the C entry point:
//
//   #include "ckptbridge/sdk/plugin.hpp"
//   namespace sdk = ckptbridge::sdk;
//
//   class MyAdapter final : public sdk::Adapter {
//    public:
//     MyAdapter(std::string_view model_type, const sdk::Config& config);
//     void Rules(const sdk::RuleOptions& options, sdk::RuleSet& rules) const override;
//     nlohmann::json MaxTextConfig() const override;
//     nlohmann::json HfConfig() const override;
//   };
//
//   sdk::PluginDefinition Describe() {
//     sdk::PluginDefinition d;
//     d.name = "myfamily";
//     d.version = CKPTBRIDGE_PLUGIN_VERSION;   // set by ckptbridge_add_plugin()
//     d.model_types = {"myfamily"};
//     d.create = [](std::string_view type, const sdk::Config& config) {
//       return std::make_unique<MyAdapter>(type, config);
//     };
//     // Tiny configs `ckptbridge plugins check` converts (ABI 1.1; optional).
//     d.samples = {{"myfamily", "base", {{"hidden_size", 16}, ...}}};
//     return d;
//   }
//
//   CKPTBRIDGE_PLUGIN(Describe)
//
// Everything below turns that into the C tables of plugin_abi.h. It is the
// exception firewall too: an sdk::Error becomes its status code and message,
// any other exception CKB_INTERNAL with its what(); nothing unwinds into the
// host.
#ifndef CKPTBRIDGE_SDK_PLUGIN_HPP_
#define CKPTBRIDGE_SDK_PLUGIN_HPP_

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckptbridge/plugin_abi.h"
#include "ckptbridge/sdk/config.hpp"
#include "ckptbridge/sdk/rules.hpp"

namespace ckptbridge::sdk {

enum class Direction { kToMaxText, kToHf };

// What the host asks rules for (the options JSON of enumerate_rules).
struct RuleOptions {
  Direction direction = Direction::kToMaxText;
  bool scan_layers = true;
  nlohmann::json raw;  // every option, including ones newer than this SDK
};

// A host-owned, C-contiguous tensor handed to a custom transform.
struct TensorView {
  int32_t dtype = CKB_DTYPE_INVALID;
  Dims dims;
  void* data = nullptr;
  int64_t num_elements() const {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    return n;
  }
};

// One adapter: a model family configured by one HF config.json.
class Adapter {
 public:
  virtual ~Adapter() = default;
  // The mapping for one conversion.
  virtual void Rules(const RuleOptions& options, RuleSet& rules) const = 0;
  // MaxText model settings ({"base_emb_dim": ..., ...}).
  virtual nlohmann::json MaxTextConfig() const = 0;
  // The complete HF config.json to write when exporting.
  virtual nlohmann::json HfConfig() const = 0;
  // Custom transform `id` (sdk::Custom ops): inputs in source dtypes,
  // outputs preallocated as F32.
  virtual void ApplyCustom(int32_t id, const std::vector<TensorView>& /*inputs*/,
                           const std::vector<TensorView>& /*outputs*/) const {
    Fail(CKB_NOT_FOUND, "unknown custom transform " + std::to_string(id));
  }
};

// A tiny HF config.json the conformance kit synthesizes checkpoints from
// (plugin_abi.h, ckb_sample_config). One per model type and per variant that
// takes different rules (MoE or dense, tied or untied embeddings, ...).
struct SampleConfig {
  std::string model_type;  // one of PluginDefinition::model_types
  std::string variant;     // short label, unique per model type
  nlohmann::json config;   // the complete config.json
};

struct PluginDefinition {
  std::string name;
  std::string version;
  std::string description;
  std::vector<std::string> model_types;
  std::vector<std::string> architectures;
  std::vector<std::string> model_presets;
  // Sample configs for `ckptbridge plugins check` (ABI 1.1). Hosts of ABI 1.0
  // ignore them, so providing them does not raise abi_minor.
  std::vector<SampleConfig> samples;
  // The minimum host ABI minor this plugin needs.
  uint32_t abi_minor = 0;
  uint64_t flags = 0;
  std::function<std::unique_ptr<Adapter>(std::string_view model_type, const Config& config)> create;
  // The HF config.json of a MaxText model name; throw Error(CKB_NOT_FOUND)
  // for names you do not know. Optional.
  std::function<nlohmann::json(std::string_view model_name)> preset;
};

namespace internal {

inline ckb_str Str(const std::string& s) { return ckb_str{s.data(), s.size()}; }
inline std::string_view View(ckb_str s) {
  return s.data ? std::string_view(s.data, s.size) : std::string_view();
}

// Whether a host struct is large enough to hold `field` (older hosts pass
// smaller structs; newer fields are then absent).
#define CKPTBRIDGE_SDK_HAS_FIELD(ptr, type, field) \
  ((ptr) && (ptr)->struct_size >= offsetof(type, field) + sizeof(((type*)nullptr)->field))

inline void Report(const ckb_error_sink* err, int32_t code, const std::string& message) {
  if (CKPTBRIDGE_SDK_HAS_FIELD(err, ckb_error_sink, set) && err->set) {
    err->set(err->ctx, code, ckb_str{message.data(), message.size()});
  }
}

// Runs `fn`, turning every exception into a status and a message.
template <typename Fn>
int32_t Guard(const ckb_error_sink* err, Fn&& fn) noexcept {
  try {
    fn();
    return CKB_OK;
  } catch (const Error& e) {
    Report(err, e.code(), e.what());
    return e.code() == CKB_OK ? CKB_INTERNAL : e.code();
  } catch (const nlohmann::json::exception& e) {
    Report(err, CKB_INVALID_ARGUMENT, std::string("invalid JSON: ") + e.what());
    return CKB_INVALID_ARGUMENT;
  } catch (const std::exception& e) {
    Report(err, CKB_INTERNAL, std::string("internal error: ") + e.what());
    return CKB_INTERNAL;
  } catch (...) {
    Report(err, CKB_INTERNAL, "internal error: unknown exception");
    return CKB_INTERNAL;
  }
}

// The plugin's definition and the C views of it, built once.
struct State {
  PluginDefinition def;
  std::vector<ckb_str> model_types;
  std::vector<ckb_str> architectures;
  std::vector<ckb_str> presets;
  std::vector<std::string> sample_texts;  // config JSON text, one per sample
  std::vector<ckb_sample_config> samples;
  std::vector<const ckb_sample_config*> sample_pointers;
  ckb_plugin_vtable_v1 vtable{};
  ckb_plugin_descriptor descriptor{};
};

inline State*& StatePointer() {
  static State* state = nullptr;
  return state;
}

struct AdapterBox {
  std::unique_ptr<Adapter> adapter;
};

inline const Adapter& Unbox(const ckb_adapter* handle) {
  return *reinterpret_cast<const AdapterBox*>(handle)->adapter;
}

inline nlohmann::json ParseJson(ckb_str text, const char* what) {
  try {
    return nlohmann::json::parse(View(text));
  } catch (const nlohmann::json::parse_error& e) {
    Fail(CKB_INVALID_ARGUMENT, std::string(what) + ": not valid JSON: " + e.what());
  }
}

// C views of one sdk::Rule, alive while the object lives.
class RuleMarshal {
 public:
  explicit RuleMarshal(const Rule& rule) {
    for (const TensorDecl& t : rule.hf_inputs()) hf_.push_back(Decl(t));
    for (size_t i = 0; i < rule.mt_outputs().size(); ++i) mt_.push_back(Decl(rule.FullOutput(i)));
    for (const StackAxis& s : rule.stack()) {
      ckb_stack_axis axis{};
      axis.struct_size = sizeof(ckb_stack_axis);
      axis.meaning = static_cast<int32_t>(s.meaning);
      axis.mt_axis = s.mt_axis;
      axis.count = s.count;
      axis.hf_start = s.hf_start;
      axis.hf_stride = s.hf_stride;
      axis.hf_leading = s.hf_leading ? 1 : 0;
      stack_.push_back(axis);
    }
    for (const Op& o : rule.ops()) {
      ckb_op op{};
      op.struct_size = sizeof(ckb_op);
      op.kind = o.kind;
      op.axis = o.axis;
      op.custom_id = o.custom_id;
      op.values = o.values.data();
      op.value_count = o.values.size();
      op.factor = o.factor;
      op.inverse_factor = o.inverse_factor;
      op.size = o.size;
      ops_.push_back(op);
    }
    // C views and pointer arrays are built once the vectors stop growing.
    for (auto& d : hf_) Finish(d);
    for (auto& d : mt_) Finish(d);
    for (auto& d : hf_) hf_ptrs_.push_back(&d.decl);
    for (auto& d : mt_) mt_ptrs_.push_back(&d.decl);
    for (auto& s : stack_) stack_ptrs_.push_back(&s);
    for (auto& o : ops_) op_ptrs_.push_back(&o);
    rule_.struct_size = sizeof(ckb_rule);
    rule_.flags = rule.flags();
    rule_.hf_inputs = hf_ptrs_.data();
    rule_.hf_input_count = hf_ptrs_.size();
    rule_.mt_outputs = mt_ptrs_.data();
    rule_.mt_output_count = mt_ptrs_.size();
    rule_.stack_axes = stack_ptrs_.data();
    rule_.stack_axis_count = stack_ptrs_.size();
    rule_.ops = op_ptrs_.data();
    rule_.op_count = op_ptrs_.size();
  }
  RuleMarshal(const RuleMarshal&) = delete;
  RuleMarshal& operator=(const RuleMarshal&) = delete;

  const ckb_rule* get() const { return &rule_; }

 private:
  struct OwnedDecl {
    TensorDecl source;
    std::vector<int32_t> axes;
    ckb_tensor_decl decl{};
  };
  static OwnedDecl Decl(const TensorDecl& t) {
    OwnedDecl d;
    d.source = t;
    for (Axis a : t.axes) d.axes.push_back(static_cast<int32_t>(a));
    return d;
  }
  static void Finish(OwnedDecl& d) {
    d.decl.struct_size = sizeof(ckb_tensor_decl);
    d.decl.name = Str(d.source.name);
    d.decl.rank = static_cast<int32_t>(d.source.dims.size());
    d.decl.dims = d.source.dims.data();
    d.decl.axis_meanings = d.axes.empty() ? nullptr : d.axes.data();
  }

  std::vector<OwnedDecl> hf_;
  std::vector<OwnedDecl> mt_;
  std::vector<ckb_stack_axis> stack_;
  std::vector<ckb_op> ops_;
  std::vector<const ckb_tensor_decl*> hf_ptrs_;
  std::vector<const ckb_tensor_decl*> mt_ptrs_;
  std::vector<const ckb_stack_axis*> stack_ptrs_;
  std::vector<const ckb_op*> op_ptrs_;
  ckb_rule rule_{};
};

inline int32_t Create(ckb_str model_type, ckb_str config_json, ckb_adapter** out,
                      const ckb_error_sink* err) noexcept {
  return Guard(err, [&] {
    if (!out) Fail(CKB_INVALID_ARGUMENT, "create: null output pointer");
    *out = nullptr;
    const State& state = *StatePointer();
    Config config(ParseJson(config_json, "config.json"));
    auto box = std::make_unique<AdapterBox>();
    box->adapter = state.def.create(View(model_type), config);
    if (!box->adapter) Fail(CKB_INTERNAL, "create returned no adapter");
    *out = reinterpret_cast<ckb_adapter*>(box.release());
  });
}

inline void Destroy(ckb_adapter* handle) noexcept { delete reinterpret_cast<AdapterBox*>(handle); }

inline int32_t EnumerateRules(const ckb_adapter* handle, ckb_str options_json,
                              const ckb_rule_sink* sink, const ckb_error_sink* err) noexcept {
  return Guard(err, [&] {
    if (!handle || !sink) Fail(CKB_INVALID_ARGUMENT, "enumerate_rules: null argument");
    RuleOptions options;
    options.raw =
        options_json.size ? ParseJson(options_json, "rule options") : nlohmann::json::object();
    if (!options.raw.is_object()) Fail(CKB_INVALID_ARGUMENT, "rule options: not a JSON object");
    options.direction = options.raw.value("direction", std::string("to_maxtext")) == "to_hf"
                            ? Direction::kToHf
                            : Direction::kToMaxText;
    options.scan_layers = options.raw.value("scan_layers", true);
    RuleSet rules;
    Unbox(handle).Rules(options, rules);
    for (const Rule& rule : rules.rules()) {
      RuleMarshal marshal(rule);
      if (CKPTBRIDGE_SDK_HAS_FIELD(sink, ckb_rule_sink, rule) && sink->rule) {
        sink->rule(sink->ctx, marshal.get());
      }
    }
    for (const Ignore& ignore : rules.ignores()) {
      ckb_ignore c{};
      c.struct_size = sizeof(ckb_ignore);
      c.side = static_cast<int32_t>(ignore.side);
      c.pattern = Str(ignore.pattern);
      c.reason = Str(ignore.reason);
      if (CKPTBRIDGE_SDK_HAS_FIELD(sink, ckb_rule_sink, ignore) && sink->ignore) {
        sink->ignore(sink->ctx, &c);
      }
    }
    for (const auto& [from, to] : rules.renames()) {
      if (!CKPTBRIDGE_SDK_HAS_FIELD(sink, ckb_rule_sink, rename) || !sink->rename) {
        Fail(CKB_UNSUPPORTED,
             "this host cannot read tensors named '" + from + "...'; upgrade ckptbridge");
      }
      ckb_rename c{};
      c.struct_size = sizeof(ckb_rename);
      c.side = CKB_SIDE_HF;
      c.from_prefix = Str(from);
      c.to_prefix = Str(to);
      sink->rename(sink->ctx, &c);
    }
  });
}

inline void EmitJson(const ckb_text_sink* out, const nlohmann::json& json) {
  const std::string text = json.dump(2);
  if (CKPTBRIDGE_SDK_HAS_FIELD(out, ckb_text_sink, text) && out->text) {
    out->text(out->ctx, ckb_str{text.data(), text.size()});
  }
}

inline int32_t TranslateConfig(const ckb_adapter* handle, int32_t direction,
                               const ckb_text_sink* out, const ckb_error_sink* err) noexcept {
  return Guard(err, [&] {
    if (!handle) Fail(CKB_INVALID_ARGUMENT, "translate_config: null adapter");
    const Adapter& adapter = Unbox(handle);
    if (direction == CKB_TO_MAXTEXT) {
      EmitJson(out, adapter.MaxTextConfig());
    } else if (direction == CKB_TO_HF) {
      EmitJson(out, adapter.HfConfig());
    } else {
      Fail(CKB_INVALID_ARGUMENT,
           "translate_config: unknown direction " + std::to_string(direction));
    }
  });
}

inline int32_t PresetConfig(ckb_str model_name, const ckb_text_sink* out,
                            const ckb_error_sink* err) noexcept {
  return Guard(err, [&] {
    const State& state = *StatePointer();
    if (!state.def.preset) {
      Fail(CKB_NOT_FOUND, "no model presets in plugin '" + state.def.name + "'");
    }
    EmitJson(out, state.def.preset(View(model_name)));
  });
}

inline int32_t ApplyCustom(const ckb_adapter* handle, int32_t custom_id,
                           const ckb_tensor_view* const* inputs, size_t input_count,
                           const ckb_tensor_view* const* outputs, size_t output_count,
                           const ckb_error_sink* err) noexcept {
  return Guard(err, [&] {
    if (!handle) Fail(CKB_INVALID_ARGUMENT, "apply_custom: null adapter");
    auto convert = [](const ckb_tensor_view* const* views, size_t n) {
      std::vector<TensorView> result;
      for (size_t i = 0; i < n; ++i) {
        TensorView t;
        t.dtype = views[i]->dtype;
        t.dims.assign(views[i]->dims, views[i]->dims + views[i]->rank);
        t.data = views[i]->data;
        result.push_back(std::move(t));
      }
      return result;
    };
    Unbox(handle).ApplyCustom(custom_id, convert(inputs, input_count),
                              convert(outputs, output_count));
  });
}

// The body of the exported entry point.
inline const ckb_plugin_descriptor* Entry(const ckb_host_api* host, const ckb_error_sink* err,
                                          PluginDefinition (*describe)()) noexcept {
  const ckb_plugin_descriptor* result = nullptr;
  Guard(err, [&] {
    if (!host || host->struct_size < sizeof(uint32_t) * 3) {
      Fail(CKB_INVALID_ARGUMENT, "host passed no ABI version");
    }
    if (host->abi_major != CKPTBRIDGE_ABI_MAJOR) {
      Fail(CKB_UNSUPPORTED, "plugin built for ABI " + std::to_string(CKPTBRIDGE_ABI_MAJOR) +
                                ".x, host provides ABI " + std::to_string(host->abi_major) + "." +
                                std::to_string(host->abi_minor));
    }
    State*& state = StatePointer();
    if (!state) {
      // Never freed: plugins are never unloaded, and the host borrows these
      // tables for the life of the process.
      auto* s = new State;
      s->def = describe();
      for (const auto& t : s->def.model_types) s->model_types.push_back(Str(t));
      for (const auto& a : s->def.architectures) s->architectures.push_back(Str(a));
      for (const auto& p : s->def.model_presets) s->presets.push_back(Str(p));
      // Texts first, then views of them: the vectors must stop growing before
      // anything points into them.
      for (const SampleConfig& c : s->def.samples) s->sample_texts.push_back(c.config.dump(2));
      for (size_t i = 0; i < s->def.samples.size(); ++i) {
        ckb_sample_config c{};
        c.struct_size = sizeof(ckb_sample_config);
        c.model_type = Str(s->def.samples[i].model_type);
        c.variant = Str(s->def.samples[i].variant);
        c.config_json = Str(s->sample_texts[i]);
        s->samples.push_back(c);
      }
      for (const ckb_sample_config& c : s->samples) s->sample_pointers.push_back(&c);
      s->vtable.struct_size = sizeof(ckb_plugin_vtable_v1);
      s->vtable.create = &Create;
      s->vtable.destroy = &Destroy;
      s->vtable.enumerate_rules = &EnumerateRules;
      s->vtable.translate_config = &TranslateConfig;
      s->vtable.preset_config = &PresetConfig;
      s->vtable.apply_custom = &ApplyCustom;
      ckb_plugin_descriptor& d = s->descriptor;
      d.struct_size = sizeof(ckb_plugin_descriptor);
      d.abi_major = CKPTBRIDGE_ABI_MAJOR;
      d.abi_minor = s->def.abi_minor;
      d.name = Str(s->def.name);
      d.version = Str(s->def.version);
      d.description = Str(s->def.description);
      d.model_types = s->model_types.data();
      d.model_type_count = s->model_types.size();
      d.architectures = s->architectures.data();
      d.architecture_count = s->architectures.size();
      d.model_presets = s->presets.data();
      d.model_preset_count = s->presets.size();
      d.flags = s->def.flags;
      d.vtable = &s->vtable;
      d.sample_configs = s->sample_pointers.data();
      d.sample_config_count = s->sample_pointers.size();
      state = s;
    }
    result = &state->descriptor;
  });
  return result;
}

}  // namespace internal
}  // namespace ckptbridge::sdk

// Emits the plugin's one exported symbol. `describe` is a function returning
// sdk::PluginDefinition. Use once per plugin, at namespace scope.
#define CKPTBRIDGE_PLUGIN(describe)                                                 \
  extern "C" __attribute__((visibility("default"))) const ckb_plugin_descriptor*    \
  ckptbridge_plugin_entry_v1(const ckb_host_api* host, const ckb_error_sink* err) { \
    return ::ckptbridge::sdk::internal::Entry(host, err, &describe);                \
  }

#endif  // CKPTBRIDGE_SDK_PLUGIN_HPP_
