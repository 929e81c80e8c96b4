// host/plugin/adapter.cc - calls through a plugin's function table, and the
// checks on what comes back.
//
// Everything a plugin hands over is copied while its callback runs and
// validated before the engine sees it: the engine may then trust a RuleSet
// (names non-empty, dims non-negative, op kinds and axis meanings known,
// stack axes inside every MaxText tensor). A field of an ABI struct is read
// only when the struct's struct_size covers it; every field this host reads
// exists since ABI 1.0, so a struct smaller than its 1.0 layout is rejected
// as a whole rather than field by field.
//
// Exceptions: plugins built with the SDK catch everything at the boundary
// (the SDK's firewall turns exceptions into CKB_INTERNAL). A plugin that lets
// a C++ exception escape through these C calls has undefined behaviour; the
// host does not try to catch it, because unwinding a foreign exception through
// C frames cannot be done reliably.
#include "host/plugin/adapter.h"

#include <cstddef>
#include <optional>
#include <set>
#include <utility>

namespace ckptbridge {
namespace {

// ABI 1.0 sizes: through the end of each struct's last 1.0 field.
constexpr size_t kRuleV1Size = offsetof(ckb_rule, op_count) + sizeof(ckb_rule::op_count);
constexpr size_t kDeclV1Size =
    offsetof(ckb_tensor_decl, axis_meanings) + sizeof(ckb_tensor_decl::axis_meanings);
constexpr size_t kStackV1Size =
    offsetof(ckb_stack_axis, hf_stride) + sizeof(ckb_stack_axis::hf_stride);
constexpr size_t kOpV1Size = offsetof(ckb_op, size) + sizeof(ckb_op::size);
constexpr size_t kIgnoreV1Size = offsetof(ckb_ignore, reason) + sizeof(ckb_ignore::reason);
constexpr size_t kRenameV1Size = offsetof(ckb_rename, to_prefix) + sizeof(ckb_rename::to_prefix);

// Bounds past which a count can only be garbage; checked before reading so a
// corrupt struct fails with a message instead of reading far past its end.
constexpr int32_t kMaxRank = 32;
constexpr size_t kMaxListSize = 1 << 16;
constexpr size_t kMaxStringSize = 1 << 16;
constexpr size_t kMaxStackAxes = 2;

using Problem = std::optional<std::string>;

// --- Sinks ----------------------------------------------------------------

struct CallError {
  std::string message;
  bool set = false;

  static void Set(void* ctx, int32_t /*code*/, ckb_str message) {
    auto* self = static_cast<CallError*>(ctx);
    if (self->set) return;  // the first report is the cause
    self->set = true;
    if (message.data != nullptr) self->message.assign(message.data, message.size);
  }
  ckb_error_sink Sink() { return ckb_error_sink{sizeof(ckb_error_sink), this, &CallError::Set}; }
};

struct TextCollector {
  std::string text;
  bool called = false;

  static void Text(void* ctx, ckb_str text) {
    auto* self = static_cast<TextCollector*>(ctx);
    self->called = true;
    if (text.data != nullptr) self->text.append(text.data, text.size);
  }
  ckb_text_sink Sink() { return ckb_text_sink{sizeof(ckb_text_sink), this, &TextCollector::Text}; }
};

// The host's code for a plugin status; the returned status decides, not the
// code passed to the error sink.
StatusCode CodeFromAbi(int32_t status) {
  switch (status) {
    case CKB_INVALID_ARGUMENT:
      return StatusCode::kInvalidArgument;
    case CKB_NOT_FOUND:
      return StatusCode::kNotFound;
    case CKB_UNSUPPORTED:
      return StatusCode::kUnsupported;
    case CKB_FAILED_PRECONDITION:
      return StatusCode::kFailedPrecondition;
    case CKB_RESOURCE_EXHAUSTED:
      return StatusCode::kResourceExhausted;
    default:
      return StatusCode::kInternal;
  }
}

std::string Prefix(const LoadedPlugin& plugin) { return "plugin '" + plugin.name + "': "; }

Status PluginFailure(const LoadedPlugin& plugin, std::string_view function, int32_t status,
                     const CallError& error) {
  if (error.message.empty()) {
    return Status(CodeFromAbi(status), Prefix(plugin) + std::string(function) +
                                           " failed with status " + std::to_string(status) +
                                           " and no message");
  }
  return Status(CodeFromAbi(status), Prefix(plugin) + error.message);
}

ckb_str Str(std::string_view s) { return ckb_str{s.data(), s.size()}; }

// --- Copying and checking rules --------------------------------------------

std::string SizeProblem(std::string_view what, std::string_view type, uint32_t size,
                        size_t v1_size) {
  return std::string(what) + " has struct_size " + std::to_string(size) + ", an ABI 1.0 " +
         std::string(type) + " has at least " + std::to_string(v1_size) + " bytes";
}

Problem CopyString(ckb_str s, std::string_view what, std::string& out) {
  out.clear();
  if (s.size == 0) return std::nullopt;
  if (s.data == nullptr) {
    return std::string(what) + " has size " + std::to_string(s.size) + " but a null pointer";
  }
  if (s.size > kMaxStringSize) {
    return std::string(what) + " is " + std::to_string(s.size) + " bytes long";
  }
  out.assign(s.data, s.size);
  return std::nullopt;
}

// A pointer + count array from the plugin: non-null when non-empty, and of a
// plausible length.
template <typename T>
Problem CheckArray(const T* items, size_t count, std::string_view what) {
  if (count > kMaxListSize) return std::string(what) + ": count " + std::to_string(count);
  if (count > 0 && items == nullptr) {
    return std::string(what) + ": " + std::to_string(count) + " entries but a null pointer";
  }
  return std::nullopt;
}

std::string DimsString(const int64_t* dims, int32_t rank) {
  return ShapeString(Shape(dims, dims + rank));
}

Problem CopyDecl(const ckb_tensor_decl* in, const std::string& what, TensorDecl& out) {
  if (in == nullptr) return what + " is null";
  if (in->struct_size < kDeclV1Size) {
    return SizeProblem(what, "ckb_tensor_decl", in->struct_size, kDeclV1Size);
  }
  if (Problem p = CopyString(in->name, what + " name", out.name)) return p;
  if (out.name.empty()) return what + " has an empty name";
  const std::string named = what + " '" + out.name + "'";
  if (in->rank < 0 || in->rank > kMaxRank) {
    return named + " has rank " + std::to_string(in->rank) + " (expected 0 to " +
           std::to_string(kMaxRank) + ")";
  }
  if (in->rank > 0 && in->dims == nullptr) {
    return named + " has rank " + std::to_string(in->rank) + " but no dims";
  }
  out.dims.assign(in->dims, in->dims + in->rank);
  for (int32_t i = 0; i < in->rank; ++i) {
    if (out.dims[i] < 0) {
      return named + " has negative dim " + std::to_string(out.dims[i]) + " at axis " +
             std::to_string(i) + " (" + DimsString(in->dims, in->rank) + ")";
    }
  }
  out.axis_meanings.clear();
  if (in->axis_meanings != nullptr) {
    // Exactly `rank` entries by contract, so the lengths agree by
    // construction; the values must be ones this host can name.
    out.axis_meanings.assign(in->axis_meanings, in->axis_meanings + in->rank);
    for (int32_t i = 0; i < in->rank; ++i) {
      int32_t m = out.axis_meanings[i];
      if (m < CKB_AXIS_OTHER || m > CKB_AXIS_FUSED) {
        return named + " has unknown axis meaning " + std::to_string(m) + " at axis " +
               std::to_string(i);
      }
    }
  }
  return std::nullopt;
}

Problem CopyDecls(const ckb_tensor_decl* const* in, size_t count, std::string_view side,
                  std::vector<TensorDecl>& out) {
  if (Problem p = CheckArray(in, count, std::string(side) + " list")) return p;
  if (count == 0) return "has no " + std::string(side) + "s";
  out.resize(count);
  for (size_t i = 0; i < count; ++i) {
    if (Problem p = CopyDecl(in[i], std::string(side) + " " + std::to_string(i), out[i])) return p;
  }
  return std::nullopt;
}

std::string MeaningName(int32_t meaning) {
  switch (meaning) {
    case CKB_AXIS_LAYERS:
      return "layers";
    case CKB_AXIS_EXPERTS:
      return "experts";
    default:
      return std::to_string(meaning);
  }
}

Problem CopyStack(const ckb_rule& in, Rule& out) {
  if (Problem p = CheckArray(in.stack_axes, in.stack_axis_count, "stack axis list")) return p;
  if (in.stack_axis_count > kMaxStackAxes) {
    return "has " + std::to_string(in.stack_axis_count) + " stack axes, at most " +
           std::to_string(kMaxStackAxes) + " (layers and experts) are allowed";
  }
  std::set<int32_t> meanings, mt_axes;
  for (size_t i = 0; i < in.stack_axis_count; ++i) {
    const std::string what = "stack axis " + std::to_string(i);
    const ckb_stack_axis* s = in.stack_axes[i];
    if (s == nullptr) return what + " is null";
    if (s->struct_size < kStackV1Size) {
      return SizeProblem(what, "ckb_stack_axis", s->struct_size, kStackV1Size);
    }
    if (s->meaning != CKB_AXIS_LAYERS && s->meaning != CKB_AXIS_EXPERTS) {
      return what + " has meaning " + std::to_string(s->meaning) + ", expected layers (" +
             std::to_string(CKB_AXIS_LAYERS) + ") or experts (" + std::to_string(CKB_AXIS_EXPERTS) +
             ")";
    }
    const std::string named = what + " (" + MeaningName(s->meaning) + ")";
    if (!meanings.insert(s->meaning).second) return named + " appears twice";
    if (s->count < 1) return named + " has count " + std::to_string(s->count) + ", expected >= 1";
    if (s->hf_start < 0 || s->hf_stride < 1) {
      return named + " has hf_start " + std::to_string(s->hf_start) + " and hf_stride " +
             std::to_string(s->hf_stride) + ", expected hf_start >= 0 and hf_stride >= 1";
    }
    if (!mt_axes.insert(s->mt_axis).second) {
      return named + " uses MaxText axis " + std::to_string(s->mt_axis) + " twice";
    }
    for (const TensorDecl& mt : out.mt_outputs) {
      const auto rank = static_cast<int32_t>(mt.dims.size());
      if (s->mt_axis < 0 || s->mt_axis >= rank) {
        return named + " is MaxText axis " + std::to_string(s->mt_axis) + ", out of range for '" +
               mt.name + "' of rank " + std::to_string(rank);
      }
      if (mt.dims[s->mt_axis] != s->count) {
        return named + " has count " + std::to_string(s->count) + " but '" + mt.name + "' has " +
               std::to_string(mt.dims[s->mt_axis]) + " at axis " + std::to_string(s->mt_axis) +
               " (" + ShapeString(mt.dims) + ")";
      }
    }
    StackAxis axis{s->meaning, s->mt_axis, s->count, s->hf_start, s->hf_stride};
    // hf_leading came with ABI 1.2; a shorter struct means a placeholder.
    if (s->struct_size >= offsetof(ckb_stack_axis, hf_leading) + sizeof(s->hf_leading)) {
      axis.hf_leading = s->hf_leading != 0;
    }
    if (axis.hf_leading && (axis.hf_start != 0 || axis.hf_stride != 1)) {
      return named + " runs along the HF tensors' leading axis but has hf_start " +
             std::to_string(s->hf_start) + " and hf_stride " + std::to_string(s->hf_stride) +
             ", expected 0 and 1";
    }
    out.stack.push_back(axis);
  }
  return std::nullopt;
}

Problem CopyOps(const ckb_rule& in, Rule& out) {
  if (Problem p = CheckArray(in.ops, in.op_count, "op list")) return p;
  for (size_t i = 0; i < in.op_count; ++i) {
    const std::string what = "op " + std::to_string(i);
    const ckb_op* op = in.ops[i];
    if (op == nullptr) return what + " is null";
    if (op->struct_size < kOpV1Size) return SizeProblem(what, "ckb_op", op->struct_size, kOpV1Size);
    if (op->kind < CKB_OP_TRANSPOSE || op->kind > CKB_OP_CUSTOM) {
      return what + " has unknown op kind " + std::to_string(op->kind);
    }
    // Positions the host's planner and inverter depend on (plugin_abi.h).
    if ((op->kind == CKB_OP_CONCAT || op->kind == CKB_OP_CUSTOM) && i != 0) {
      return what + " is a " + (op->kind == CKB_OP_CONCAT ? "concat" : "custom") +
             " op, which may only come first in a chain";
    }
    if (op->kind == CKB_OP_SPLIT && i + 1 != in.op_count) {
      return what + " is a split op, which may only come last in a chain";
    }
    if (op->axis < 0) return what + " has negative axis " + std::to_string(op->axis);
    if (Problem p = CheckArray(op->values, op->value_count, what + " values")) return p;
    OpSpec spec;
    spec.kind = static_cast<OpKind>(op->kind);
    spec.axis = op->axis;
    spec.custom_id = op->custom_id;
    spec.values.assign(op->values, op->values + op->value_count);
    spec.factor = op->factor;
    spec.inverse_factor = op->inverse_factor;
    spec.size = op->size;
    out.ops.push_back(std::move(spec));
  }
  return std::nullopt;
}

// Copies and checks everything the plugin emits through the rule sink. A sink
// cannot fail the plugin's call, so the first problem is kept and reported
// once enumerate_rules returns.
class RuleCollector {
 public:
  ckb_rule_sink Sink() {
    return ckb_rule_sink{sizeof(ckb_rule_sink), this, &RuleCollector::OnRule,
                         &RuleCollector::OnIgnore, &RuleCollector::OnRename};
  }

  RuleSet& rules() { return rules_; }
  const Problem& problem() const { return problem_; }

 private:
  static void OnRule(void* ctx, const ckb_rule* rule) {
    auto* self = static_cast<RuleCollector*>(ctx);
    ++self->rule_count_;
    if (self->problem_) return;
    Rule copy;
    if (Problem p = self->CopyRule(rule, copy)) {
      // Name the rule by its first MaxText output when that much was readable.
      std::string which = copy.mt_outputs.empty() || copy.mt_outputs[0].name.empty()
                              ? "rule " + std::to_string(self->rule_count_)
                              : "rule for '" + copy.mt_outputs[0].name + "'";
      self->problem_ = which + ": " + *p;
      return;
    }
    self->rules_.rules.push_back(std::move(copy));
  }

  static void OnIgnore(void* ctx, const ckb_ignore* ignore) {
    auto* self = static_cast<RuleCollector*>(ctx);
    ++self->ignore_count_;
    if (self->problem_) return;
    IgnoreRule copy;
    if (Problem p = CopyIgnore(ignore, copy)) {
      self->problem_ = "ignore entry " + std::to_string(self->ignore_count_) + ": " + *p;
      return;
    }
    self->rules_.ignores.push_back(std::move(copy));
  }

  static void OnRename(void* ctx, const ckb_rename* rename) {
    auto* self = static_cast<RuleCollector*>(ctx);
    ++self->rename_count_;
    if (self->problem_) return;
    RenameRule copy;
    if (Problem p = CopyRename(rename, copy)) {
      self->problem_ = "rename entry " + std::to_string(self->rename_count_) + ": " + *p;
      return;
    }
    self->rules_.renames.push_back(std::move(copy));
  }

  static Problem CopyRename(const ckb_rename* in, RenameRule& out) {
    if (in == nullptr) return "is null";
    if (in->struct_size < kRenameV1Size) {
      return SizeProblem("it", "ckb_rename", in->struct_size, kRenameV1Size);
    }
    if (in->side != CKB_SIDE_HF) {
      return "has side " + std::to_string(in->side) + "; only hf (" + std::to_string(CKB_SIDE_HF) +
             ") names can be renamed";
    }
    out.side = in->side;
    if (Problem p = CopyString(in->from_prefix, "from_prefix", out.from_prefix)) return p;
    if (Problem p = CopyString(in->to_prefix, "to_prefix", out.to_prefix)) return p;
    if (out.from_prefix.empty() || out.from_prefix == out.to_prefix) {
      return "renames '" + out.from_prefix + "' to '" + out.to_prefix + "'";
    }
    return std::nullopt;
  }

  static Problem CopyRule(const ckb_rule* in, Rule& out) {
    if (in == nullptr) return "is null";
    if (in->struct_size < kRuleV1Size) {
      return SizeProblem("it", "ckb_rule", in->struct_size, kRuleV1Size);
    }
    out.flags = in->flags;
    // MaxText outputs first: they name the rule in every later message.
    if (Problem p = CopyDecls(in->mt_outputs, in->mt_output_count, "mt output", out.mt_outputs)) {
      return p;
    }
    if (Problem p = CopyDecls(in->hf_inputs, in->hf_input_count, "hf input", out.hf_inputs)) {
      return p;
    }
    if (Problem p = CopyStack(*in, out)) return p;
    return CopyOps(*in, out);
  }

  static Problem CopyIgnore(const ckb_ignore* in, IgnoreRule& out) {
    if (in == nullptr) return "is null";
    if (in->struct_size < kIgnoreV1Size) {
      return SizeProblem("it", "ckb_ignore", in->struct_size, kIgnoreV1Size);
    }
    if (in->side != CKB_SIDE_HF && in->side != CKB_SIDE_MAXTEXT) {
      return "has side " + std::to_string(in->side) + ", expected hf (" +
             std::to_string(CKB_SIDE_HF) + ") or maxtext (" + std::to_string(CKB_SIDE_MAXTEXT) +
             ")";
    }
    out.side = in->side;
    if (Problem p = CopyString(in->pattern, "pattern", out.pattern)) return p;
    if (out.pattern.empty()) return "has an empty pattern";
    return CopyString(in->reason, "reason", out.reason);
  }

  RuleSet rules_;
  Problem problem_;
  size_t rule_count_ = 0;
  size_t ignore_count_ = 0;
  size_t rename_count_ = 0;
};

const ckb_plugin_vtable_v1* Vtable(const LoadedPlugin& plugin) {
  return plugin.descriptor != nullptr ? plugin.descriptor->vtable : nullptr;
}

}  // namespace

Result<std::unique_ptr<Adapter>> Adapter::Create(const LoadedPlugin& plugin,
                                                 std::string_view model_type,
                                                 std::string_view hf_config_json) {
  const ckb_plugin_vtable_v1* vtable = Vtable(plugin);
  if (vtable == nullptr) {
    return FailedPrecondition(Prefix(plugin) + "not loaded (no descriptor)");
  }
  bool serves = false;
  for (const std::string& type : plugin.model_types) serves |= type == model_type;
  if (!serves) {
    std::string types;
    for (const std::string& type : plugin.model_types) types += (types.empty() ? "" : ", ") + type;
    return NotFound(Prefix(plugin) + "does not serve model type '" + std::string(model_type) +
                    "' (it serves " + types + ")");
  }
  CallError error;
  ckb_error_sink sink = error.Sink();
  ckb_adapter* handle = nullptr;
  int32_t status = vtable->create(Str(model_type), Str(hf_config_json), &handle, &sink);
  if (status != CKB_OK) {
    // A failed create owns nothing by contract, but a stray handle is still
    // the plugin's to free.
    if (handle != nullptr) vtable->destroy(handle);
    return PluginFailure(plugin, "create", status, error);
  }
  if (handle == nullptr)
    return Internal(Prefix(plugin) + "create succeeded but returned no adapter");
  return std::unique_ptr<Adapter>(new Adapter(plugin, handle));
}

Adapter::~Adapter() {
  if (handle_ != nullptr) Vtable(plugin_)->destroy(handle_);
}

Result<RuleSet> Adapter::Rules(std::string_view options_json) const {
  RuleCollector collector;
  ckb_rule_sink rule_sink = collector.Sink();
  CallError error;
  ckb_error_sink sink = error.Sink();
  int32_t status = Vtable(plugin_)->enumerate_rules(handle_, Str(options_json), &rule_sink, &sink);
  if (status != CKB_OK) return PluginFailure(plugin_, "enumerate_rules", status, error);
  if (collector.problem()) return Internal(Prefix(plugin_) + *collector.problem());
  return std::move(collector.rules());
}

Result<std::string> Adapter::TranslateConfig(int32_t direction) const {
  if (direction != CKB_TO_MAXTEXT && direction != CKB_TO_HF) {
    return InvalidArgument("translate_config: unknown direction " + std::to_string(direction));
  }
  TextCollector text;
  ckb_text_sink text_sink = text.Sink();
  CallError error;
  ckb_error_sink sink = error.Sink();
  int32_t status = Vtable(plugin_)->translate_config(handle_, direction, &text_sink, &sink);
  if (status != CKB_OK) return PluginFailure(plugin_, "translate_config", status, error);
  if (text.text.empty()) return Internal(Prefix(plugin_) + "translate_config returned no text");
  return std::move(text.text);
}

Status Adapter::ApplyCustom(int32_t custom_id, const std::vector<TensorRef>& inputs,
                            const std::vector<TensorRef>& outputs) const {
  const ckb_plugin_vtable_v1* vtable = Vtable(plugin_);
  if (vtable->apply_custom == nullptr) {
    return Unsupported(Prefix(plugin_) + "custom transform " + std::to_string(custom_id) +
                       " was requested but the plugin has no custom transforms");
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (outputs[i].dtype != DType::kF32) {
      return InvalidArgument(Prefix(plugin_) + "custom transform " + std::to_string(custom_id) +
                             ": output " + std::to_string(i) + " is " +
                             std::string(ZarrName(outputs[i].dtype)) +
                             ", custom outputs are float32");
    }
  }
  auto views_of = [](const std::vector<TensorRef>& refs) {
    std::vector<ckb_tensor_view> views;
    views.reserve(refs.size());
    for (const TensorRef& ref : refs) {
      views.push_back(ckb_tensor_view{sizeof(ckb_tensor_view), static_cast<int32_t>(ref.dtype),
                                      static_cast<int32_t>(ref.dims.size()), ref.dims.data(),
                                      ref.data});
    }
    return views;
  };
  auto pointers_to = [](const std::vector<ckb_tensor_view>& views) {
    std::vector<const ckb_tensor_view*> pointers;
    pointers.reserve(views.size());
    for (const ckb_tensor_view& view : views) pointers.push_back(&view);
    return pointers;
  };
  std::vector<ckb_tensor_view> in_views = views_of(inputs);
  std::vector<ckb_tensor_view> out_views = views_of(outputs);
  std::vector<const ckb_tensor_view*> in_pointers = pointers_to(in_views);
  std::vector<const ckb_tensor_view*> out_pointers = pointers_to(out_views);
  CallError error;
  ckb_error_sink sink = error.Sink();
  int32_t status = vtable->apply_custom(handle_, custom_id, in_pointers.data(), in_pointers.size(),
                                        out_pointers.data(), out_pointers.size(), &sink);
  if (status != CKB_OK) return PluginFailure(plugin_, "apply_custom", status, error);
  return Status::Ok();
}

Result<std::string> PresetConfig(const LoadedPlugin& plugin, std::string_view model_name) {
  const ckb_plugin_vtable_v1* vtable = Vtable(plugin);
  if (vtable == nullptr) return FailedPrecondition(Prefix(plugin) + "not loaded (no descriptor)");
  if (vtable->preset_config == nullptr) {
    return NotFound(Prefix(plugin) + "has no model presets, so no config for model '" +
                    std::string(model_name) + "'");
  }
  TextCollector text;
  ckb_text_sink text_sink = text.Sink();
  CallError error;
  ckb_error_sink sink = error.Sink();
  int32_t status = vtable->preset_config(Str(model_name), &text_sink, &sink);
  if (status == CKB_NOT_FOUND && error.message.empty()) {
    return NotFound(Prefix(plugin) + "no preset for model '" + std::string(model_name) + "'");
  }
  if (status != CKB_OK) return PluginFailure(plugin, "preset_config", status, error);
  if (text.text.empty()) {
    return Internal(Prefix(plugin) + "preset_config returned no text for model '" +
                    std::string(model_name) + "'");
  }
  return std::move(text.text);
}

}  // namespace ckptbridge
