#include "host/check/open.h"

#include <set>
#include <system_error>

#include "host/base/file.h"
#include "host/base/json.h"
#include "host/formats/orbax/checkpoint.h"

namespace ckptbridge::check {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The same choices convert makes (host/engine/convert.cc).
Result<std::optional<DType>> ParseSaveDType(const std::string& text, DType fallback) {
  if (text.empty()) return std::optional<DType>(fallback);
  if (text == "source") return std::optional<DType>();
  if (text == "bfloat16" || text == "bf16") return std::optional<DType>(DType::kBF16);
  if (text == "float32" || text == "f32" || text == "fp32")
    return std::optional<DType>(DType::kF32);
  if (text == "float16" || text == "f16" || text == "fp16")
    return std::optional<DType>(DType::kF16);
  return InvalidArgument("--save-dtype '" + text +
                         "' is not one of bfloat16, float32, float16, source");
}

std::string RuleOptions(const OpenOptions& options, engine::Direction direction, bool scan) {
  json o = options.plugin_options.is_object() ? options.plugin_options : json::object();
  o["direction"] = direction == engine::Direction::kToHf ? "to_hf" : "to_maxtext";
  o["scan_layers"] = scan;
  return o.dump();
}

std::string Label(const LoadedPlugin& plugin) {
  return "plugin '" + plugin.name + "' " + plugin.version;
}

Status OpenHfSide(const fs::path& path, const std::string& family, const PluginRegistry& plugins,
                  Opened& opened) {
  const fs::path config_path =
      fs::is_directory(path) ? path / "config.json" : path.parent_path() / "config.json";
  if (!fs::exists(config_path)) {
    return NotFound(path.string() +
                    ": no config.json (an HF checkpoint folder has config.json next to its "
                    ".safetensors files)");
  }
  CKB_ASSIGN_OR_RETURN(opened.hf_config, ParseJsonFile(config_path));
  CKB_ASSIGN_OR_RETURN(opened.hf, safetensors::Checkpoint::Open(path));
  CKB_ASSIGN_OR_RETURN(const LoadedPlugin* plugin,
                       engine::SelectPlugin(plugins, opened.hf_config, family, &opened.model_type));
  CKB_ASSIGN_OR_RETURN(opened.adapter,
                       Adapter::Create(*plugin, opened.model_type, opened.hf_config.dump()));
  opened.plugin_label = plugin->name + " " + plugin->version;
  return Status::Ok();
}

Status OpenMaxTextSide(const fs::path& path, const OpenOptions& options,
                       const PluginRegistry& plugins, Opened& opened) {
  CKB_ASSIGN_OR_RETURN(opened.maxtext, engine::OpenMaxTextSource(path));
  CKB_ASSIGN_OR_RETURN(engine::ModelChoice model,
                       engine::IdentifyModel(opened.maxtext, options.hf_config_file,
                                             options.model_name, options.family, plugins, {}));
  opened.hf_config = model.hf_config;
  opened.model_type = model.model_type;
  CKB_ASSIGN_OR_RETURN(opened.adapter,
                       Adapter::Create(*model.plugin, model.model_type, model.hf_config.dump()));
  opened.plugin_label = model.plugin->name + " " + model.plugin->version;
  opened.scan = opened.maxtext.scan;
  return Status::Ok();
}

std::string PluginLabelOf(const Opened& opened) { return Label(opened.adapter->plugin()); }

}  // namespace

PathKind DetectKind(const fs::path& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) {
    return path.extension() == ".safetensors" ? PathKind::kHf : PathKind::kUnknown;
  }
  if (!fs::is_directory(path, ec)) return PathKind::kUnknown;
  if (orbax::ResolveItem(path).ok()) return PathKind::kOrbax;
  if (fs::exists(path / "config.json", ec) ||
      fs::exists(path / "model.safetensors.index.json", ec)) {
    return PathKind::kHf;
  }
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    if (entry.path().extension() == ".safetensors") return PathKind::kHf;
  }
  return PathKind::kUnknown;
}

Result<Opened> OpenSource(const OpenOptions& options, engine::Direction direction,
                          const PluginRegistry& plugins) {
  Opened opened;
  if (direction == engine::Direction::kToMaxText) {
    if (DetectKind(options.source) != PathKind::kHf) {
      return InvalidArgument(options.source.string() +
                             " is not a Hugging Face folder (config.json + *.safetensors); "
                             "--to maxtext reads one");
    }
    CKB_RETURN_IF_ERROR(OpenHfSide(options.source, options.family, plugins, opened));
    opened.scan = options.scan_layers.value_or(true);
    CKB_ASSIGN_OR_RETURN(RuleSet rules,
                         opened.adapter->Rules(RuleOptions(options, direction, opened.scan)));
    engine::ToMaxTextOptions plan_options;
    CKB_ASSIGN_OR_RETURN(plan_options.save_dtype, ParseSaveDType(options.save_dtype, DType::kBF16));
    plan_options.max_chunk_bytes = options.max_chunk_bytes;
    plan_options.max_unit_memory = options.max_unit_memory;
    CKB_ASSIGN_OR_RETURN(
        opened.plan, engine::PlanToMaxText(rules, *opened.hf, plan_options, PluginLabelOf(opened)));
    return opened;
  }
  if (DetectKind(options.source) != PathKind::kOrbax) {
    return InvalidArgument(options.source.string() +
                           " is not an Orbax checkpoint (no _METADATA, items/_METADATA or step "
                           "directory); --to hf reads one");
  }
  CKB_RETURN_IF_ERROR(OpenMaxTextSide(options.source, options, plugins, opened));
  if (options.scan_layers && opened.maxtext.recorded_scan &&
      *options.scan_layers != *opened.maxtext.recorded_scan) {
    return InvalidArgument(
        std::string(*options.scan_layers ? "--scan-layers" : "--no-scan-layers") +
        " contradicts the checkpoint, which records scan_layers=" +
        (*opened.maxtext.recorded_scan ? "true" : "false"));
  }
  if (options.scan_layers) opened.scan = *options.scan_layers;
  CKB_ASSIGN_OR_RETURN(RuleSet rules,
                       opened.adapter->Rules(RuleOptions(options, direction, opened.scan)));
  CKB_ASSIGN_OR_RETURN(std::string config_text, opened.adapter->TranslateConfig(CKB_TO_HF));
  DType fallback = DType::kBF16;
  try {
    const json out_config = json::parse(config_text);
    for (const char* key : {"torch_dtype", "dtype"}) {
      if (out_config.contains(key) && out_config[key].is_string()) {
        if (auto d = DTypeFromTorchName(out_config[key].get<std::string>())) fallback = *d;
      }
    }
  } catch (const json::exception&) {
    // convert reports a bad config; the plan only needs the default dtype
  }
  engine::ToHfOptions plan_options;
  CKB_ASSIGN_OR_RETURN(plan_options.save_dtype, ParseSaveDType(options.save_dtype, fallback));
  plan_options.max_unit_memory = options.max_unit_memory;
  CKB_ASSIGN_OR_RETURN(opened.plan, engine::PlanToHf(rules, *opened.maxtext.item, plan_options,
                                                     PluginLabelOf(opened)));
  return opened;
}

Result<Opened> OpenPair(const OpenOptions& options, const PluginRegistry& plugins) {
  const PathKind src = DetectKind(options.source);
  const PathKind dst = DetectKind(options.destination);
  auto what = [](PathKind k) {
    return k == PathKind::kHf      ? "a Hugging Face folder"
           : k == PathKind::kOrbax ? "an Orbax checkpoint"
                                   : "neither a Hugging Face folder nor an Orbax checkpoint";
  };
  if (src == PathKind::kUnknown || dst == PathKind::kUnknown || src == dst) {
    return InvalidArgument(
        "verify compares an HF folder with the Orbax checkpoint converted from "
        "it, or an Orbax checkpoint with the HF folder exported from it; " +
        options.source.string() + " is " + what(src) + " and " + options.destination.string() +
        " is " + what(dst));
  }
  Opened opened;
  if (src == PathKind::kHf) {
    CKB_RETURN_IF_ERROR(OpenHfSide(options.source, options.family, plugins, opened));
    CKB_ASSIGN_OR_RETURN(opened.maxtext, engine::OpenMaxTextSource(options.destination));
    opened.scan = opened.maxtext.scan;
    CKB_ASSIGN_OR_RETURN(RuleSet rules, opened.adapter->Rules(RuleOptions(
                                            options, engine::Direction::kToMaxText, opened.scan)));
    // Output dtypes are read from the output; the plan's own are unused.
    engine::ToMaxTextOptions plan_options;
    CKB_ASSIGN_OR_RETURN(
        opened.plan, engine::PlanToMaxText(rules, *opened.hf, plan_options, PluginLabelOf(opened)));
    std::set<std::string> planned;
    for (const engine::PlannedRule& rule : opened.plan.rules) {
      for (size_t i = 0; i < rule.rule.mt_outputs.size(); ++i) {
        const TensorDecl& out = rule.rule.mt_outputs[i];
        planned.insert(out.name);
        const orbax::ItemReader::ArrayEntry* entry = opened.maxtext.tree.Find(out.name);
        if (!entry) {
          opened.structure.push_back("'" + out.name + "' is missing from " +
                                     options.destination.string());
        } else if (entry->metadata.shape != out.dims) {
          opened.structure.push_back(
              "'" + out.name + "' has shape " + ShapeString(entry->metadata.shape) + " in " +
              options.destination.string() + " but " + ShapeString(out.dims) + " by the rules");
        }
      }
    }
    for (const auto& [path, entry] : opened.maxtext.tree.params()) {
      if (!planned.count(path)) {
        opened.structure.push_back("'" + path + "' is in " + options.destination.string() +
                                   " but no rule produces it from " + options.source.string() +
                                   " (converted with --multimodal or --mtp? pass the same flag)");
      }
    }
  } else {
    CKB_RETURN_IF_ERROR(OpenMaxTextSide(options.source, options, plugins, opened));
    CKB_ASSIGN_OR_RETURN(opened.hf, safetensors::Checkpoint::Open(options.destination));
    CKB_ASSIGN_OR_RETURN(RuleSet rules, opened.adapter->Rules(RuleOptions(
                                            options, engine::Direction::kToHf, opened.scan)));
    engine::ToHfOptions plan_options;
    plan_options.save_dtype = std::nullopt;
    CKB_ASSIGN_OR_RETURN(opened.plan, engine::PlanToHf(rules, *opened.maxtext.item, plan_options,
                                                       PluginLabelOf(opened)));
    std::set<std::string> planned;
    for (const engine::HfTensor& t : opened.plan.hf_tensors) {
      planned.insert(t.name);
      const safetensors::CheckpointTensor* found = opened.hf->Find(t.name);
      if (!found) {
        opened.structure.push_back("'" + t.name + "' is missing from " +
                                   options.destination.string());
      } else if (found->info->shape != t.shape) {
        opened.structure.push_back("'" + t.name + "' has shape " + ShapeString(found->info->shape) +
                                   " in " + options.destination.string() + " but " +
                                   ShapeString(t.shape) + " by the rules");
      }
    }
    for (const safetensors::CheckpointTensor& t : opened.hf->tensors()) {
      if (!planned.count(t.info->name)) {
        opened.structure.push_back("'" + t.info->name + "' is in " + options.destination.string() +
                                   " but no rule produces it");
      }
    }
  }
  return opened;
}

}  // namespace ckptbridge::check
