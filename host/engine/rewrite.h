// host/engine/rewrite.h - MaxText to MaxText: `strip` and `restack`.
//
// Both read a MaxText checkpoint (any tree layout MaxTextTree knows, training
// or inference) and write an inference checkpoint: the model parameters only,
// in MaxText's Linen layout ({step, params: {params: ...}, opt_state: {}}),
// streaming slice by slice or chunk by chunk.
//
//   strip    keeps the layer layout (a chunk-by-chunk copy, no plugin needed)
//            unless a target layout is given;
//   restack  changes it: scanned -> unscanned or back. The plugin's rules for
//            both layouts say where each layer's slice lives; a slice is
//            matched across layouts by the HF tensors it is made of, and
//            moved without being converted (same dtype, bit for bit).
//
// Optimizer state, the RNG state of NNX trees and anything else that is not a
// parameter are left out, with a note.
#ifndef CKPTBRIDGE_HOST_ENGINE_REWRITE_H_
#define CKPTBRIDGE_HOST_ENGINE_REWRITE_H_

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "host/base/status.h"
#include "host/engine/convert.h"
#include "host/formats/orbax/checkpoint.h"
#include "host/plugin/loader.h"

namespace ckptbridge::engine {

struct RewriteOptions {
  std::filesystem::path source;
  std::filesystem::path destination;
  bool overwrite = false;
  // The layout to write; nullopt keeps the source's.
  std::optional<bool> scan_layers;
  orbax::WriteOptions storage;  // OCDBT and zarr version of the output
  // How to find the model when the layout changes (as for --to hf).
  std::filesystem::path hf_config_file;
  std::string model_name;
  std::string family;
  nlohmann::json plugin_options = nlohmann::json::object();
  int threads = 0;
  uint64_t max_memory = 0;  // as ConvertOptions::max_memory
};

// Writes the parameters of `options.source` to `options.destination`.
Result<ConvertSummary> RewriteMaxText(const RewriteOptions& options, const PluginRegistry& plugins,
                                      const ConvertObserver& observer);

}  // namespace ckptbridge::engine

#endif  // CKPTBRIDGE_HOST_ENGINE_REWRITE_H_
