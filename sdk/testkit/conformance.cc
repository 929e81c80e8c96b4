// sdk/testkit/conformance.cc - the checks behind `ckptbridge plugins check`.
//
// Everything goes through the host's own code paths (loader, Adapter, the
// engine's chain resolution and Convert), so a plugin that passes here is
// accepted by the host for the same reasons. The kit adds only what the host
// does not need to check on every run: whole-rule-set properties (unique
// paths, resolvable templates, invertible chains, consistent axis meanings)
// and real conversions of synthesized checkpoints.
#include "ckptbridge/testkit/conformance.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>

#include "host/base/dtype.h"
#include "host/base/numeric.h"
#include "host/base/shape.h"
#include "host/base/status.h"
#include "host/engine/convert.h"
#include "host/engine/ops.h"
#include "host/engine/plan.h"
#include "host/formats/orbax/checkpoint.h"
#include "host/formats/safetensors/reader.h"
#include "host/formats/safetensors/writer.h"
#include "host/plugin/adapter.h"
#include "host/plugin/loader.h"

namespace ckptbridge::testkit {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Collects results and forwards each to the caller as it comes.
class Recorder {
 public:
  Recorder(Report& report, const Options& options) : report_(report), options_(options) {}

  void Add(Outcome outcome, std::string name, std::string detail) {
    report_.results.push_back({std::move(name), outcome, std::move(detail)});
    if (options_.on_result) options_.on_result(report_.results.back());
  }
  void Pass(std::string name, std::string detail) {
    Add(Outcome::kPass, std::move(name), std::move(detail));
  }
  void Fail(std::string name, std::string detail) {
    Add(Outcome::kFail, std::move(name), std::move(detail));
  }
  void Skip(std::string name, std::string detail) {
    Add(Outcome::kSkip, std::move(name), std::move(detail));
  }

 private:
  Report& report_;
  const Options& options_;
};

std::string Join(const std::vector<std::string>& items, std::string_view separator = ", ") {
  std::string joined;
  for (const std::string& item : items) {
    if (!joined.empty()) joined += separator;
    joined += item;
  }
  return joined;
}

// At most `limit` items, then "and N more".
std::string JoinSome(const std::vector<std::string>& items, size_t limit = 5) {
  if (items.size() <= limit) return Join(items);
  std::vector<std::string> head(items.begin(), items.begin() + static_cast<std::ptrdiff_t>(limit));
  return Join(head) + " and " + std::to_string(items.size() - limit) + " more";
}

std::string AxisName(int32_t meaning) {
  switch (meaning) {
    case CKB_AXIS_EMBED:
      return "embed";
    case CKB_AXIS_VOCAB:
      return "vocab";
    case CKB_AXIS_HEADS:
      return "heads";
    case CKB_AXIS_KV_HEADS:
      return "kv_heads";
    case CKB_AXIS_HEAD_DIM:
      return "head_dim";
    case CKB_AXIS_MLP:
      return "mlp";
    case CKB_AXIS_EXPERTS:
      return "experts";
    case CKB_AXIS_LAYERS:
      return "layers";
    case CKB_AXIS_FUSED:
      return "fused";
    default:
      return "other";
  }
}

// --- Rule-set checks -----------------------------------------------------------

// The shape of one MaxText slice: the full shape without the stacked axes.
Shape SliceShape(const TensorDecl& mt, const std::vector<StackAxis>& stack) {
  Shape slice;
  for (size_t axis = 0; axis < mt.dims.size(); ++axis) {
    bool stacked = false;
    for (const StackAxis& s : stack) stacked |= s.mt_axis == static_cast<int32_t>(axis);
    if (!stacked) slice.push_back(mt.dims[axis]);
  }
  return slice;
}

std::string RuleName(const Rule& rule) {
  return rule.mt_outputs.empty() ? std::string("(rule without outputs)")
                                 : "'" + rule.mt_outputs[0].name + "'";
}

// Every stack index combination of a rule (one empty slice without stacking).
std::vector<std::vector<int64_t>> Slices(const Rule& rule) {
  std::vector<std::vector<int64_t>> slices = {{}};
  for (const StackAxis& s : rule.stack) {
    std::vector<std::vector<int64_t>> next;
    for (const auto& prefix : slices) {
      for (int64_t i = 0; i < s.count; ++i) {
        next.push_back(prefix);
        next.back().push_back(i);
      }
    }
    slices = std::move(next);
  }
  return slices;
}

// Placeholders a template uses: any "{...}" run.
std::vector<std::string> Placeholders(const std::string& name) {
  std::vector<std::string> found;
  for (size_t open = name.find('{'); open != std::string::npos; open = name.find('{', open + 1)) {
    size_t close = name.find('}', open);
    if (close == std::string::npos) {
      found.push_back(name.substr(open));
      break;
    }
    found.push_back(name.substr(open, close - open + 1));
  }
  return found;
}

// What the rule set of one (direction, scan) says, with the first problems.
struct RuleSetFacts {
  std::vector<std::string> problems;
  size_t rules = 0;
  size_t hf_tensors = 0;
};

void CheckTemplates(const Rule& rule, std::vector<std::string>& problems) {
  bool has_layer_axis = false, has_expert_axis = false;
  for (const StackAxis& s : rule.stack) {
    if (s.hf_leading) continue;  // an axis of the tensor, not a placeholder
    has_layer_axis |= s.meaning == CKB_AXIS_LAYERS;
    has_expert_axis |= s.meaning == CKB_AXIS_EXPERTS;
  }
  for (const TensorDecl& in : rule.hf_inputs) {
    bool uses_layer = false, uses_expert = false;
    for (const std::string& p : Placeholders(in.name)) {
      if (p == "{layer}") {
        uses_layer = true;
      } else if (p == "{expert}") {
        uses_expert = true;
      } else {
        problems.push_back("rule " + RuleName(rule) + ": HF template '" + in.name +
                           "' has placeholder " + p + "; only {layer} and {expert} exist");
      }
    }
    if (uses_layer != has_layer_axis) {
      problems.push_back("rule " + RuleName(rule) + ": HF template '" + in.name +
                         (uses_layer ? "' uses {layer} but the rule stacks no layers"
                                     : "' has no {layer} but the rule stacks layers, so every "
                                       "layer would read the same tensor"));
    }
    if (uses_expert != has_expert_axis) {
      problems.push_back("rule " + RuleName(rule) + ": HF template '" + in.name +
                         (uses_expert ? "' uses {expert} but the rule stacks no experts"
                                      : "' has no {expert} but the rule stacks experts, so every "
                                        "expert would read the same tensor"));
    }
  }
}

void CheckChain(const Rule& rule, engine::Direction direction, std::vector<std::string>& problems) {
  std::vector<Shape> inputs;
  const bool leading = std::any_of(rule.stack.begin(), rule.stack.end(),
                                   [](const StackAxis& s) { return s.hf_leading; });
  for (const TensorDecl& in : rule.hf_inputs) {
    inputs.push_back(in.dims);
    // The ops see one slice of a leading stack axis: the tensor without it.
    if (leading && !inputs.back().empty()) inputs.back().erase(inputs.back().begin());
  }
  Result<engine::Chain> chain = engine::ResolveChain(rule.ops, inputs);
  if (!chain.ok()) {
    problems.push_back("rule " + RuleName(rule) + ": op chain: " + chain.status().message());
    return;
  }
  std::vector<Shape> expected;
  for (const TensorDecl& mt : rule.mt_outputs) expected.push_back(SliceShape(mt, rule.stack));
  if (chain->outputs != expected) {
    std::vector<std::string> got, want;
    for (const Shape& s : chain->outputs) got.push_back(ShapeString(s));
    for (const Shape& s : expected) want.push_back(ShapeString(s));
    problems.push_back("rule " + RuleName(rule) + ": the op chain turns HF slices into " +
                       Join(got) + " but the MaxText slices are " + Join(want));
    return;
  }
  const bool custom = !rule.ops.empty() && rule.ops[0].kind == OpKind::kCustom;
  if (custom) {
    if (direction == engine::Direction::kToHf) {
      problems.push_back("rule " + RuleName(rule) +
                         ": a custom op in a to-HF rule; the host cannot invert custom ops, so "
                         "give the to-HF direction a rule made of ordinary ops");
    }
    return;
  }
  Result<engine::Chain> inverse = engine::InvertChain(*chain);
  if (!inverse.ok()) {
    problems.push_back("rule " + RuleName(rule) +
                       ": op chain is not invertible: " + inverse.status().message());
  }
}

// Axis meanings against shapes, at the scope where a size must hold:
//  - embed and vocab: one size per side across the whole rule set (a padded
//    MaxText vocabulary differs from HF's, but consistently);
//  - heads, kv_heads, experts and layers: one size within each rule, both
//    sides and the stack counts together (a family may have several: dense and
//    MoE layer stacks, an indexer's own heads);
//  - a stacked MaxText axis declares the stack's own meaning.
// head_dim and mlp are left out: MLA has several head dims, MoE several MLP
// widths, even within one rule.
void CheckAxes(const RuleSet& rules, std::vector<std::string>& problems) {
  using Seen = std::map<int32_t, std::pair<int64_t, std::string>>;  // meaning -> size, where
  auto see = [&](Seen& seen, const std::string& scope, int32_t meaning, int64_t size,
                 const std::string& where) {
    auto [it, inserted] = seen.emplace(meaning, std::make_pair(size, where));
    if (!inserted && it->second.first != size) {
      problems.push_back(scope + "axis meaning " + AxisName(meaning) + " has size " +
                         std::to_string(it->second.first) + " in " + it->second.second + " but " +
                         std::to_string(size) + " in " + where);
    }
  };
  static const std::set<int32_t> kPerSide = {CKB_AXIS_EMBED, CKB_AXIS_VOCAB};
  static const std::set<int32_t> kPerRule = {CKB_AXIS_HEADS, CKB_AXIS_KV_HEADS, CKB_AXIS_EXPERTS,
                                             CKB_AXIS_LAYERS};
  Seen hf_side, mt_side;
  for (const Rule& rule : rules.rules) {
    Seen in_rule;
    const std::string rule_scope = "rule " + RuleName(rule) + ": ";
    for (const StackAxis& s : rule.stack) {
      see(in_rule, rule_scope, s.meaning, s.count, "its stack axis");
    }
    auto check_decl = [&](const TensorDecl& t, bool hf) {
      for (size_t a = 0; a < t.axis_meanings.size(); ++a) {
        const int32_t m = t.axis_meanings[a];
        const std::string where =
            "'" + t.name + "' " + ShapeString(t.dims) + " axis " + std::to_string(a);
        if (kPerSide.count(m)) {
          see(hf ? hf_side : mt_side, hf ? "HF " : "MaxText ", m, t.dims[a], where);
        }
        if (kPerRule.count(m)) see(in_rule, rule_scope, m, t.dims[a], where);
      }
    };
    for (const TensorDecl& t : rule.hf_inputs) check_decl(t, true);
    for (const TensorDecl& t : rule.mt_outputs) {
      check_decl(t, false);
      if (t.axis_meanings.empty()) continue;
      for (const StackAxis& s : rule.stack) {
        int32_t declared = t.axis_meanings[static_cast<size_t>(s.mt_axis)];
        if (declared != s.meaning) {
          problems.push_back(rule_scope + "MaxText '" + t.name + "' axis " +
                             std::to_string(s.mt_axis) + " is stacked " + AxisName(s.meaning) +
                             " but declared " + AxisName(declared));
        }
      }
    }
  }
}

RuleSetFacts CheckRuleSet(const RuleSet& rules, engine::Direction direction) {
  RuleSetFacts facts;
  facts.rules = rules.rules.size();
  std::map<std::string, std::string> mt_paths;  // path -> rule
  std::map<std::string, std::string> hf_names;  // resolved name -> rule
  for (const Rule& rule : rules.rules) {
    for (const TensorDecl& mt : rule.mt_outputs) {
      auto [it, inserted] = mt_paths.emplace(mt.name, RuleName(rule));
      if (!inserted) {
        facts.problems.push_back("MaxText path '" + mt.name + "' is written by two rules (" +
                                 it->second + " and " + RuleName(rule) + ")");
      }
    }
    CheckTemplates(rule, facts.problems);
    for (const auto& slice : Slices(rule)) {
      // The slices of a leading stack axis are parts of one HF tensor.
      bool later_part = false;
      for (size_t k = 0; k < rule.stack.size(); ++k) {
        later_part |= rule.stack[k].hf_leading && slice[k] > 0;
      }
      if (later_part) continue;
      for (const TensorDecl& in : rule.hf_inputs) {
        std::string name = engine::ResolveTemplate(in.name, rule, slice);
        auto [it, inserted] = hf_names.emplace(name, RuleName(rule));
        // Reading one HF tensor twice is fine; writing it twice is not.
        if (!inserted && direction == engine::Direction::kToHf) {
          facts.problems.push_back("HF tensor '" + name + "' is written by two rules (" +
                                   it->second + " and " + RuleName(rule) + ")");
        }
      }
    }
    CheckChain(rule, direction, facts.problems);
  }
  CheckAxes(rules, facts.problems);
  facts.hf_tensors = hf_names.size();
  return facts;
}

// --- Synthesized checkpoints ---------------------------------------------------

// A random bfloat16 bit pattern of moderate magnitude (2^-8 .. 2^4, either
// sign): no zeros, infinities or NaNs, so every value survives the f32 round
// trip and a misplaced element cannot hide behind an equal neighbour.
uint16_t RandomBf16(std::mt19937& rng) {
  std::uniform_int_distribution<uint32_t> sign(0, 1), exponent(127 - 8, 127 + 4), mantissa(0, 127);
  return static_cast<uint16_t>((sign(rng) << 15) | (exponent(rng) << 7) | mantissa(rng));
}

struct HfSpec {
  std::string name;
  Shape shape;
  bool lossy = false;  // read by a lossy rule: not compared bit for bit
  // Read by a keep_f32 rule: comes back as float32 holding the source's
  // values exactly, whatever dtype the source had (CKB_RULE_KEEP_F32).
  bool keep_f32 = false;
};

// Every HF tensor the to-MaxText rules read, with its slice shape.
Result<std::vector<HfSpec>> HfTensorsOf(const RuleSet& rules) {
  std::map<std::string, HfSpec> by_name;
  for (const Rule& rule : rules.rules) {
    for (const auto& slice : Slices(rule)) {
      for (const TensorDecl& in : rule.hf_inputs) {
        std::string name = engine::ResolveTemplate(in.name, rule, slice);
        auto [it, inserted] = by_name.emplace(name, HfSpec{name, in.dims, rule.lossy()});
        if (!inserted && it->second.shape != in.dims) {
          return InvalidArgument("HF tensor '" + name + "' is read as " +
                                 ShapeString(it->second.shape) + " by one rule and as " +
                                 ShapeString(in.dims) + " by " + RuleName(rule));
        }
        it->second.lossy |= rule.lossy();
        it->second.keep_f32 |= rule.keep_f32();
      }
    }
  }
  std::vector<HfSpec> specs;
  for (auto& [name, spec] : by_name) specs.push_back(std::move(spec));
  return specs;
}

Status WriteSyntheticHf(const fs::path& dir, const std::string& config_text,
                        const std::vector<HfSpec>& specs, uint32_t seed) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Internal("cannot create " + dir.string() + ": " + ec.message());
  std::mt19937 rng(seed);
  std::vector<safetensors::TensorWithData> tensors;
  for (const HfSpec& spec : specs) {
    CKB_ASSIGN_OR_RETURN(int64_t n, NumElements(spec.shape));
    std::string bytes(static_cast<size_t>(n) * 2, '\0');
    for (int64_t i = 0; i < n; ++i) {
      uint16_t v = RandomBf16(rng);
      bytes[static_cast<size_t>(2 * i)] = static_cast<char>(v & 0xff);
      bytes[static_cast<size_t>(2 * i + 1)] = static_cast<char>(v >> 8);
    }
    tensors.push_back({{spec.name, DType::kBF16, spec.shape}, std::move(bytes)});
  }
  CKB_RETURN_IF_ERROR(safetensors::WriteCheckpoint(dir, tensors));
  std::ofstream config(dir / "config.json", std::ios::trunc);
  config << config_text << '\n';
  config.close();
  if (!config) return Internal("cannot write " + (dir / "config.json").string());
  return Status::Ok();
}

// The parameter paths of an Orbax item (without "params.params.").
Result<std::set<std::string>> MaxTextPaths(const fs::path& root) {
  CKB_ASSIGN_OR_RETURN(std::unique_ptr<orbax::ItemReader> item, orbax::ItemReader::Open(root));
  std::set<std::string> paths;
  for (const auto& entry : item->arrays()) {
    std::string name = entry.leaf->name();
    if (name.rfind(engine::kOrbaxParamsPrefix, 0) == 0) {
      paths.insert(name.substr(engine::kOrbaxParamsPrefix.size()));
    }
  }
  return paths;
}

// name -> (dtype, shape, bytes) of every tensor of an HF folder.
struct RawTensor {
  DType dtype = DType::kInvalid;
  Shape shape;
  std::string bytes;
};
Result<std::map<std::string, RawTensor>> ReadRawHf(const fs::path& dir) {
  CKB_ASSIGN_OR_RETURN(std::unique_ptr<safetensors::Checkpoint> checkpoint,
                       safetensors::Checkpoint::Open(dir));
  std::map<std::string, RawTensor> tensors;
  for (const safetensors::CheckpointTensor& t : checkpoint->tensors()) {
    const auto* data = reinterpret_cast<const char*>(t.file->Data(*t.info));
    tensors[t.info->name] = {t.info->dtype, t.info->shape,
                             std::string(data, data + t.info->num_bytes())};
  }
  return tensors;
}

struct Storage {
  bool ocdbt;
  bool zarr3;
  std::string label() const {
    return std::string(ocdbt ? "ocdbt" : "no-ocdbt") + "+" + (zarr3 ? "zarr3" : "zarr2");
  }
};

// A temporary directory removed on destruction unless kept.
class WorkDir {
 public:
  explicit WorkDir(const fs::path& requested) {
    if (!requested.empty()) {
      path_ = requested;
      keep_ = true;
    } else {
      std::string pattern = (fs::temp_directory_path() / "ckptbridge-check-XXXXXX").string();
      if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
    }
    std::error_code ec;
    if (!path_.empty()) fs::create_directories(path_, ec);
  }
  ~WorkDir() {
    std::error_code ec;
    if (!keep_ && !path_.empty()) fs::remove_all(path_, ec);
  }
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  bool keep_ = false;
};

std::string RuleOptions(engine::Direction direction, bool scan) {
  return json{{"direction", direction == engine::Direction::kToHf ? "to_hf" : "to_maxtext"},
              {"scan_layers", scan}}
      .dump();
}

// --- The checks, in order --------------------------------------------------------

void CheckPresets(const LoadedPlugin& plugin, Recorder& rec) {
  if (plugin.model_presets.empty()) {
    rec.Skip("presets", "the plugin declares no MaxText model presets");
    return;
  }
  std::vector<std::string> problems;
  for (const std::string& preset : plugin.model_presets) {
    Result<std::string> text = PresetConfig(plugin, preset);
    if (!text.ok()) {
      problems.push_back(text.status().message());
      continue;
    }
    json config = json::parse(*text, nullptr, false);
    if (!config.is_object()) {
      problems.push_back("preset '" + preset + "' is not a JSON object");
      continue;
    }
    std::string type = config.value("model_type", std::string());
    if (std::find(plugin.model_types.begin(), plugin.model_types.end(), type) ==
        plugin.model_types.end()) {
      problems.push_back("preset '" + preset + "' has model_type '" + type +
                         "', which the plugin does not serve");
    }
  }
  if (problems.empty()) {
    rec.Pass("presets", std::to_string(plugin.model_presets.size()) + " presets give configs");
  } else {
    rec.Fail("presets", JoinSome(problems, 3));
  }
}

void CheckConfigs(const Adapter& adapter, const SampleConfig& sample, const std::string& label,
                  Recorder& rec) {
  const std::string name = "config " + label;
  Result<std::string> mt = adapter.TranslateConfig(CKB_TO_MAXTEXT);
  if (!mt.ok()) return rec.Fail(name, mt.status().message());
  json mt_json = json::parse(*mt, nullptr, false);
  if (!mt_json.is_object()) return rec.Fail(name, "MaxText settings are not a JSON object");
  Result<std::string> hf = adapter.TranslateConfig(CKB_TO_HF);
  if (!hf.ok()) return rec.Fail(name, hf.status().message());
  json hf_json = json::parse(*hf, nullptr, false);
  if (!hf_json.is_object()) return rec.Fail(name, "the HF config.json is not a JSON object");
  if (hf_json.value("model_type", std::string()) != sample.model_type) {
    return rec.Fail(name, "the HF config.json to export has model_type " +
                              (hf_json.contains("model_type") ? hf_json["model_type"].dump()
                                                              : std::string("(none)")) +
                              ", expected \"" + sample.model_type + "\"");
  }
  rec.Pass(name, std::to_string(mt_json.size()) + " MaxText settings, HF config.json with " +
                     std::to_string(hf_json.size()) + " keys");
}

// Rules of one (direction, scan); nullopt after reporting a failure.
std::optional<RuleSet> CheckRules(const Adapter& adapter, const std::string& label,
                                  engine::Direction direction, bool scan, Recorder& rec) {
  const std::string name = "rules " + label + " " +
                           (direction == engine::Direction::kToHf ? "to-hf" : "to-maxtext") + " " +
                           (scan ? "scanned" : "unscanned");
  Result<RuleSet> rules = adapter.Rules(RuleOptions(direction, scan));
  if (!rules.ok()) {
    rec.Fail(name, rules.status().message());
    return std::nullopt;
  }
  if (rules->rules.empty()) {
    rec.Fail(name, "the plugin gave no rules");
    return std::nullopt;
  }
  RuleSetFacts facts = CheckRuleSet(*rules, direction);
  if (!facts.problems.empty()) {
    rec.Fail(name, JoinSome(facts.problems, 3));
    return std::nullopt;
  }
  rec.Pass(name, std::to_string(facts.rules) + " rules over " + std::to_string(facts.hf_tensors) +
                     " HF tensors");
  return std::move(*rules);
}

void RoundTrip(const PluginRegistry& registry, const LoadedPlugin& plugin, const fs::path& hf_dir,
               const std::vector<HfSpec>& specs, const RuleSet& to_mt_rules, bool scan,
               const Storage& storage, const fs::path& dir, const std::string& label,
               Recorder& rec) {
  const std::string name =
      "round trip " + label + " " + (scan ? "scanned" : "unscanned") + " " + storage.label();
  std::vector<std::string> notices;
  engine::ConvertObserver observer;
  observer.notice = [&](const std::string& line) { notices.push_back(line); };
  auto failed = [&](const std::string& step, const Status& status) {
    std::string detail = step + ": " + status.message();
    if (!notices.empty()) detail += " (notices: " + JoinSome(notices, 3) + ")";
    rec.Fail(name, detail);
  };

  engine::ConvertOptions to_mt;
  to_mt.direction = engine::Direction::kToMaxText;
  to_mt.source = hf_dir;
  to_mt.destination = dir / "maxtext";
  to_mt.overwrite = true;
  to_mt.scan_layers = scan;
  to_mt.save_dtype = "float32";
  to_mt.ocdbt = storage.ocdbt;
  to_mt.zarr3 = storage.zarr3;
  to_mt.family = plugin.name;
  Result<engine::ConvertSummary> forward = engine::Convert(to_mt, registry, observer);
  if (!forward.ok()) return failed("HF -> MaxText", forward.status());

  // Coverage on the MaxText side: exactly the declared paths.
  Result<std::set<std::string>> written = MaxTextPaths(to_mt.destination);
  if (!written.ok()) return failed("reading the MaxText output", written.status());
  std::set<std::string> declared;
  for (const Rule& rule : to_mt_rules.rules) {
    for (const TensorDecl& mt : rule.mt_outputs) declared.insert(mt.name);
  }
  std::vector<std::string> missing, extra;
  std::set_difference(declared.begin(), declared.end(), written->begin(), written->end(),
                      std::back_inserter(missing));
  std::set_difference(written->begin(), written->end(), declared.begin(), declared.end(),
                      std::back_inserter(extra));
  if (!missing.empty() || !extra.empty()) {
    return rec.Fail(name, "MaxText output does not match the rules: missing " +
                              (missing.empty() ? std::string("none") : JoinSome(missing)) +
                              "; unexpected " +
                              (extra.empty() ? std::string("none") : JoinSome(extra)));
  }

  engine::ConvertOptions to_hf;
  to_hf.direction = engine::Direction::kToHf;
  to_hf.source = to_mt.destination;
  to_hf.destination = dir / "hf";
  to_hf.overwrite = true;
  to_hf.save_dtype = "bfloat16";
  to_hf.family = plugin.name;
  Result<engine::ConvertSummary> backward = engine::Convert(to_hf, registry, observer);
  if (!backward.ok()) return failed("MaxText -> HF", backward.status());

  Result<std::map<std::string, RawTensor>> original = ReadRawHf(hf_dir);
  if (!original.ok()) return failed("reading the synthesized HF checkpoint", original.status());
  Result<std::map<std::string, RawTensor>> back = ReadRawHf(to_hf.destination);
  if (!back.ok()) return failed("reading the exported HF checkpoint", back.status());

  std::vector<std::string> lost, added, differ;
  size_t exact = 0, lossy = 0;
  for (const HfSpec& spec : specs) {
    auto it = back->find(spec.name);
    if (it == back->end()) {
      lost.push_back(spec.name);
      continue;
    }
    if (spec.lossy) {
      ++lossy;
      continue;
    }
    RawTensor a = original->at(spec.name);
    const RawTensor& b = it->second;
    if (spec.keep_f32 && a.dtype != DType::kF32 && b.dtype == DType::kF32 && a.shape == b.shape &&
        ReadableAsF32(a.dtype)) {
      // Widening is exact: compare the float32 the source's values are.
      std::vector<float> wide(static_cast<size_t>(NumElementsUnchecked(a.shape)));
      if (ToF32(a.dtype, a.bytes.data(), wide.data(), wide.size()).ok()) {
        a.dtype = DType::kF32;
        a.bytes.assign(reinterpret_cast<const char*>(wide.data()), wide.size() * 4);
      }
    }
    if (a.dtype != b.dtype || a.shape != b.shape) {
      differ.push_back(spec.name + " (" + std::string(SafetensorsName(a.dtype)) +
                       ShapeString(a.shape) + " came back as " +
                       std::string(SafetensorsName(b.dtype)) + ShapeString(b.shape) + ")");
    } else if (a.bytes != b.bytes) {
      size_t element = 0;
      while (element * 2 + 1 < a.bytes.size() &&
             a.bytes.compare(element * 2, 2, b.bytes, element * 2, 2) == 0) {
        ++element;
      }
      differ.push_back(spec.name + " (first difference at element " + std::to_string(element) +
                       ")");
    } else {
      ++exact;
    }
  }
  for (const auto& [tensor_name, tensor] : *back) {
    (void)tensor;
    bool known = std::any_of(specs.begin(), specs.end(),
                             [&](const HfSpec& s) { return s.name == tensor_name; });
    if (!known) added.push_back(tensor_name);
  }
  std::vector<std::string> problems;
  if (!lost.empty()) problems.push_back("HF tensors not written back: " + JoinSome(lost));
  if (!added.empty())
    problems.push_back("HF tensors that were not in the source: " + JoinSome(added));
  if (!differ.empty()) problems.push_back("not bit-exact: " + JoinSome(differ));
  if (!problems.empty()) return rec.Fail(name, Join(problems, "; "));
  std::string detail = std::to_string(declared.size()) + " MaxText paths, " +
                       std::to_string(exact) + " HF tensors bit-exact";
  if (lossy > 0)
    detail += ", " + std::to_string(lossy) + " from lossy rules present (not compared)";
  rec.Pass(name, detail);
}

void CheckSample(const PluginRegistry& registry, const LoadedPlugin& plugin,
                 const SampleConfig& sample, const fs::path& work, const Options& options,
                 Recorder& rec) {
  const std::string label = sample.model_type + "/" + sample.variant;
  Result<std::unique_ptr<Adapter>> adapter =
      Adapter::Create(plugin, sample.model_type, sample.config_json);
  if (!adapter.ok()) return rec.Fail("create " + label, adapter.status().message());
  rec.Pass("create " + label, "adapter created from the sample config");
  CheckConfigs(**adapter, sample, label, rec);

  std::map<bool, RuleSet> to_mt_rules;
  bool rules_ok = true;
  for (engine::Direction direction : {engine::Direction::kToMaxText, engine::Direction::kToHf}) {
    for (bool scan : {true, false}) {
      std::optional<RuleSet> rules = CheckRules(**adapter, label, direction, scan, rec);
      rules_ok &= rules.has_value();
      if (rules && direction == engine::Direction::kToMaxText) to_mt_rules[scan] = *rules;
    }
  }
  const std::string sample_dir_name = sample.model_type + "-" + sample.variant;
  if (!rules_ok) {
    rec.Skip("round trips " + label, "the rules have problems (above)");
    return;
  }
  Result<std::vector<HfSpec>> specs = HfTensorsOf(to_mt_rules[true]);
  if (!specs.ok()) return rec.Fail("checkpoint " + label, specs.status().message());
  // The unscanned rules must read the same checkpoint.
  Result<std::vector<HfSpec>> unscanned = HfTensorsOf(to_mt_rules[false]);
  if (unscanned.ok()) {
    std::set<std::string> a, b;
    for (const HfSpec& s : *specs) a.insert(s.name);
    for (const HfSpec& s : *unscanned) b.insert(s.name);
    if (a != b) {
      return rec.Fail("checkpoint " + label, "scanned rules read " + std::to_string(a.size()) +
                                                 " HF tensors, unscanned rules " +
                                                 std::to_string(b.size()) +
                                                 "; both must read the same checkpoint");
    }
  }

  const fs::path sample_dir = work / sample_dir_name;
  const fs::path hf_dir = sample_dir / "hf";
  json config = json::parse(sample.config_json, nullptr, false);
  if (!config.is_object()) {
    return rec.Fail("checkpoint " + label, "the sample config is not a JSON object");
  }
  // The synthesized tensors are bfloat16; say so, so the export writes them
  // back in the same dtype whatever the sample declares.
  config["torch_dtype"] = "bfloat16";
  Status written = WriteSyntheticHf(hf_dir, config.dump(2), *specs, options.seed);
  if (!written.ok()) return rec.Fail("checkpoint " + label, written.message());
  rec.Pass("checkpoint " + label,
           std::to_string(specs->size()) + " random bfloat16 HF tensors in " + hf_dir.string());

  std::vector<Storage> storages = {{true, true}};
  if (options.all_storage_variants)
    storages = {{true, true}, {true, false}, {false, true}, {false, false}};
  for (bool scan : {true, false}) {
    for (const Storage& storage : storages) {
      const fs::path dir = sample_dir / ((scan ? "scanned-" : "unscanned-") + storage.label());
      RoundTrip(registry, plugin, hf_dir, *specs, to_mt_rules[scan], scan, storage, dir, label,
                rec);
    }
  }
}

}  // namespace

Report CheckPlugin(const Options& options) {
  Report report;
  Recorder rec(report, options);

  // Loaded alone: exactly this file, no directories, no environment.
  DiscoveryOptions discovery;
  discovery.plugin_files = {options.plugin};
  discovery.use_environment = false;
  discovery.use_install_dir = false;
  Result<PluginRegistry> registry = PluginRegistry::Discover(discovery);
  if (!registry.ok()) {
    rec.Fail("load", registry.status().message());
    return report;
  }
  if (registry->plugins().size() != 1) {
    rec.Fail("load", "expected one plugin from " + options.plugin.string() + ", found " +
                         std::to_string(registry->plugins().size()));
    return report;
  }
  const LoadedPlugin& plugin = registry->plugins()[0];
  rec.Pass("load", plugin.name + " " + plugin.version + ", requires ABI " +
                       std::to_string(plugin.abi_major) + "." + std::to_string(plugin.abi_minor) +
                       " (host " + std::to_string(CKPTBRIDGE_ABI_MAJOR) + "." +
                       std::to_string(CKPTBRIDGE_ABI_MINOR) + "), model types " +
                       Join(plugin.model_types));
  CheckPresets(plugin, rec);

  if (plugin.sample_configs.empty()) {
    const bool v1_0 =
        plugin.descriptor->struct_size < offsetof(ckb_plugin_descriptor, sample_config_count) +
                                             sizeof(ckb_plugin_descriptor::sample_config_count);
    rec.Skip("samples", std::string(v1_0 ? "an ABI 1.0 descriptor has no sample configs"
                                         : "the plugin declares no sample configs") +
                            "; rule checks and round trips need them (PluginDefinition::samples, "
                            "ABI 1.1)");
    return report;
  }
  std::vector<std::string> uncovered;
  for (const std::string& type : plugin.model_types) {
    bool covered = std::any_of(plugin.sample_configs.begin(), plugin.sample_configs.end(),
                               [&](const SampleConfig& s) { return s.model_type == type; });
    if (!covered) uncovered.push_back(type);
  }
  if (uncovered.empty()) {
    rec.Pass("samples", std::to_string(plugin.sample_configs.size()) +
                            " sample configs cover every model type");
  } else {
    rec.Fail("samples", "no sample config for model type" +
                            std::string(uncovered.size() > 1 ? "s " : " ") + Join(uncovered));
  }

  WorkDir work(options.work_dir);
  if (work.path().empty()) {
    rec.Fail("work dir", "cannot create a temporary directory");
    return report;
  }
  for (const SampleConfig& sample : plugin.sample_configs) {
    CheckSample(*registry, plugin, sample, work.path(), options, rec);
  }
  return report;
}

std::string FormatResult(const CheckResult& result) {
  const char* word = result.outcome == Outcome::kPass   ? "PASS"
                     : result.outcome == Outcome::kFail ? "FAIL"
                                                        : "SKIP";
  return std::string(word) + "  " + result.name + (result.detail.empty() ? "" : ": ") +
         result.detail;
}

std::string FormatReport(const Report& report) {
  std::ostringstream out;
  for (const CheckResult& r : report.results) out << FormatResult(r) << '\n';
  out << report.Count(Outcome::kPass) << " passed, " << report.Count(Outcome::kFail) << " failed, "
      << report.Count(Outcome::kSkip) << " skipped\n";
  return out.str();
}

}  // namespace ckptbridge::testkit
