// host/check/open.h - opening checkpoints and rebuilding a conversion's plan
// the way `convert` builds it, for plan, verify and doctor.
//
// The plan is made from headers and metadata only: the safetensors headers of
// an HF folder, the _METADATA and zarr metadata of an Orbax item. Nothing
// here reads tensor data.
#ifndef CKPTBRIDGE_HOST_CHECK_OPEN_H_
#define CKPTBRIDGE_HOST_CHECK_OPEN_H_

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "host/base/status.h"
#include "host/engine/convert.h"
#include "host/engine/plan.h"
#include "host/formats/safetensors/reader.h"
#include "host/plugin/adapter.h"
#include "host/plugin/loader.h"

namespace ckptbridge::check {

enum class PathKind { kHf, kOrbax, kUnknown };

// What `path` holds: an HF folder (config.json or *.safetensors, or one
// .safetensors file), an Orbax checkpoint (root, step or item directory), or
// neither.
PathKind DetectKind(const std::filesystem::path& path);

struct OpenOptions {
  std::filesystem::path source;
  std::filesystem::path destination;  // OpenPair only
  std::string family;
  std::filesystem::path hf_config_file;  // Orbax source without ckptbridge's record
  std::string model_name;
  nlohmann::json plugin_options = nlohmann::json::object();
  // OpenSource only, as `convert` takes them.
  std::optional<bool> scan_layers;
  std::string save_dtype;
  uint64_t max_chunk_bytes = uint64_t{2} << 30;
  // engine::ToMaxTextOptions / ToHfOptions::max_unit_memory; 0: no cutting.
  uint64_t max_unit_memory = 0;
};

// A source (and, for verify, its conversion) with the plan that maps them.
struct Opened {
  std::unique_ptr<safetensors::Checkpoint> hf;  // the HF side
  engine::MaxTextSource maxtext;  // the MaxText side (empty item in OpenSource to MaxText)
  std::unique_ptr<Adapter> adapter;
  engine::Plan plan;
  nlohmann::json hf_config;
  std::string plugin_label;  // "llama 0.1.0"
  std::string model_type;
  bool scan = true;
  // OpenPair: tensors missing from, extra in or misshapen in the output.
  std::vector<std::string> structure;
};

// Opens the source of a conversion and plans it in `direction`, exactly as
// convert would (same plugin choice, rules, save dtype and scan layout).
Result<Opened> OpenSource(const OpenOptions& options, engine::Direction direction,
                          const PluginRegistry& plugins);

// Opens a source and its converted output (directions detected from what
// each path holds) and plans the conversion between them: the scan layout is
// the MaxText side's; output dtypes are whatever the output stores.
Result<Opened> OpenPair(const OpenOptions& options, const PluginRegistry& plugins);

}  // namespace ckptbridge::check

#endif  // CKPTBRIDGE_HOST_CHECK_OPEN_H_
