// host/engine/convert.h - one conversion, start to finish.
//
// Convert() is what `ckptbridge convert` runs:
//
//   HF -> MaxText   open the HF folder (config.json + safetensors), pick the
//                   plugin from config.json, ask it for rules, plan, write an
//                   Orbax checkpoint <dst>/0/items, commit atomically.
//   MaxText -> HF   open the Orbax item, find the HF config (recorded in the
//                   checkpoint by ckptbridge, or --hf-config, or a --model
//                   preset), plan with the inverted rules, write safetensors
//                   shards, config.json and tokenizer files, commit.
//
// Nothing is written before the plan has succeeded, and nothing appears at
// the destination unless everything was written (see staging.h). Every run
// journals the units it finishes, so that a run killed outright can be
// continued with ConvertOptions::resume (journal.h).
#ifndef CKPTBRIDGE_HOST_ENGINE_CONVERT_H_
#define CKPTBRIDGE_HOST_ENGINE_CONVERT_H_

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "host/base/status.h"
#include "host/engine/execute.h"
#include "host/engine/maxtext_tree.h"
#include "host/engine/plan.h"
#include "host/formats/orbax/checkpoint.h"
#include "host/plugin/loader.h"

namespace ckptbridge::engine {

struct ConvertOptions {
  Direction direction = Direction::kToMaxText;
  std::filesystem::path source;
  std::filesystem::path destination;
  bool overwrite = false;
  // Continue the interrupted run of this same conversion whose staging
  // directory lies next to the destination (journal.h): what it finished
  // and still verifies is kept, the rest is converted. Without one, a fresh
  // run starts (with a notice); one of another conversion is an error.
  bool resume = false;
  // To MaxText: default true. To HF: taken from the checkpoint; an explicit
  // value that contradicts the checkpoint is an error.
  std::optional<bool> scan_layers;
  // "bfloat16", "float32", "source", or empty for the default (to MaxText:
  // bfloat16, like MaxText; to HF: the HF config's torch_dtype, else bfloat16).
  std::string save_dtype;
  // A finite value that becomes +-Inf when rounded to the output dtype is an
  // error unless this is set; then Inf is written and reported (cast_audit.h).
  bool allow_lossy = false;
  // To MaxText: the Orbax storage variant. Unset means MaxText's defaults:
  // one OCDBT database per item, zarr v3 arrays. To HF: must stay unset (an
  // Orbax source says itself how it is stored).
  std::optional<bool> ocdbt;
  std::optional<bool> zarr3;
  // To MaxText: the zstd level of every chunk; unset means
  // orbax::kDefaultZstdLevel (1; Orbax itself writes 3 into zarr v3 arrays:
  // same size on bf16 weights, half the speed). To HF: must stay unset.
  std::optional<int> zstd_level;
  uint64_t max_shard_bytes = uint64_t{3} << 30;
  std::filesystem::path hf_config_file;  // to HF
  std::string model_name;                // to HF: a MaxText model name preset
  std::filesystem::path tokenizer_dir;   // to HF
  std::string family;                    // force a plugin by name
  int threads = 0;
  // Bytes the slices in flight may hold together (execute.h: MemoryBudget);
  // 0: DefaultMaxMemory().
  uint64_t max_memory = 0;
  // Extra options for the plugin's rules (plugin_abi.h, enumerate_rules):
  // e.g. {"multimodal": true}. Plugins ignore keys they do not know.
  nlohmann::json plugin_options = nlohmann::json::object();
};

struct ConvertObserver {
  // One line for the user (what was skipped and why, what was copied).
  std::function<void(const std::string&)> notice;
  // Called once the plan is known, before any byte is written.
  std::function<void(const Plan&)> planned;
  Progress* progress = nullptr;
  const std::atomic<bool>* cancel = nullptr;
};

struct ConvertSummary {
  std::string plugin;  // "llama 0.1.0"
  std::string model_type;
  bool scan_layers = true;
  size_t tensors_read = 0;
  size_t tensors_written = 0;
  uint64_t bytes_read = 0;     // tensor bytes
  uint64_t bytes_written = 0;  // tensor bytes, uncompressed
  uint64_t bytes_on_disk = 0;  // size of the output directory
  std::filesystem::path destination;
  // Every output tensor rounded to a narrower dtype, with what the rounding
  // did (max abs/rel error, overflows, NaN, flushes to zero).
  std::vector<TensorCast> casts;
};

Result<ConvertSummary> Convert(const ConvertOptions& options, const PluginRegistry& plugins,
                               const ConvertObserver& observer);

// Picks the plugin for an HF config: by `family` (a plugin name) when given,
// else by `model_type`, else by `architectures[0]`. Sets `model_type` to the
// type the adapter should be created for. The error names every plugin found
// and what it serves.
Result<const LoadedPlugin*> SelectPlugin(const PluginRegistry& plugins,
                                         const nlohmann::json& hf_config, std::string_view family,
                                         std::string* model_type);

// A MaxText checkpoint opened for reading, with what it says about itself.
struct MaxTextSource {
  std::unique_ptr<orbax::ItemReader> item;
  MaxTextTree tree;
  const nlohmann::json* record = nullptr;  // ckptbridge's record, when we wrote it
  std::optional<bool> recorded_scan;       // custom_metadata.scan_layers
  bool scan = true;                        // recorded, else detected from the names
};
Result<MaxTextSource> OpenMaxTextSource(const std::filesystem::path& path);

// Which model a MaxText checkpoint holds: its HF config (from --hf-config,
// else a --model preset, else ckptbridge's record) and the plugin for it.
struct ModelChoice {
  nlohmann::json hf_config;
  const LoadedPlugin* plugin = nullptr;
  std::string model_type;
};
Result<ModelChoice> IdentifyModel(const MaxTextSource& source,
                                  const std::filesystem::path& hf_config_file,
                                  const std::string& model_name, const std::string& family,
                                  const PluginRegistry& plugins, const ConvertObserver& observer);

// The key under custom_metadata where ckptbridge records what it converted.
inline constexpr const char* kMetadataKey = "ckptbridge";

// Files copied next to exported weights when present.
const std::vector<std::string>& TokenizerFileNames();

}  // namespace ckptbridge::engine

#endif  // CKPTBRIDGE_HOST_ENGINE_CONVERT_H_
