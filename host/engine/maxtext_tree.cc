#include "host/engine/maxtext_tree.h"

#include <algorithm>
#include <cctype>

namespace ckptbridge::engine {
namespace {

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool IsRngState(const std::vector<std::string>& parts) {
  for (const std::string& p : parts) {
    if (p == "rngs" || p == "to_nnx__rngs") return true;
    if (p.size() > 5 && p.compare(p.size() - 5, 5, "_rngs") == 0) return true;
  }
  return false;
}

// Roots of an NNX tree that hold training state rather than the model.
bool IsTrainingRoot(std::string_view key) {
  return key == "opt_state" || key == "optimizer" || key == "step";
}

}  // namespace

std::string_view TreeKindName(TreeKind kind) {
  switch (kind) {
    case TreeKind::kLinen:
      return "Linen";
    case TreeKind::kLinenSingleParams:
      return "Linen (single params level)";
    case TreeKind::kNnxSft:
      return "NNX-SFT";
    case TreeKind::kNnxRl:
      return "NNX-RL";
  }
  return "unknown";
}

Result<MaxTextTree> MaxTextTree::Build(const orbax::ItemReader& item) {
  MaxTextTree tree;
  bool params_params = false, params = false, base = false;
  for (const orbax::LeafMetadata& leaf : item.tree().leaves) {
    if (leaf.keys.size() >= 2 && leaf.keys[0] == "params" && leaf.keys[1] == "params") {
      params_params = true;
    } else if (!leaf.keys.empty() && leaf.keys[0] == "params") {
      params = true;
    } else if (!leaf.keys.empty() && leaf.keys[0] == "base") {
      base = true;
    }
  }
  tree.kind_ = params_params ? TreeKind::kLinen
               : params      ? TreeKind::kLinenSingleParams
               : base        ? TreeKind::kNnxRl
                             : TreeKind::kNnxSft;
  const std::vector<std::string> prefix =
      tree.kind_ == TreeKind::kLinen               ? std::vector<std::string>{"params", "params"}
      : tree.kind_ == TreeKind::kLinenSingleParams ? std::vector<std::string>{"params"}
      : tree.kind_ == TreeKind::kNnxRl             ? std::vector<std::string>{"base"}
                                                   : std::vector<std::string>{};

  for (const orbax::ItemReader::ArrayEntry& array : item.arrays()) {
    const orbax::LeafMetadata& leaf = *array.leaf;
    const bool in_prefix = leaf.keys.size() > prefix.size() &&
                           std::equal(prefix.begin(), prefix.end(), leaf.keys.begin());
    if (!in_prefix || (prefix.empty() && IsTrainingRoot(leaf.keys[0]))) {
      tree.training_state_.push_back(leaf.name());
      continue;
    }
    // MaxText's param_key_parts_from_path: fold sequence indices into the
    // previous part (layers, 3 -> layers_3) and drop NNX's trailing `value`.
    std::vector<std::string> parts;
    for (size_t i = prefix.size(); i < leaf.keys.size(); ++i) {
      const std::string& key = leaf.keys[i];
      const bool index =
          (i < leaf.key_types.size() && leaf.key_types[i] == orbax::kKeyTypeSequence) ||
          AllDigits(key);
      if (index && !parts.empty()) {
        parts.back() += "_" + key;
      } else {
        parts.push_back(key);
      }
    }
    if (!parts.empty() && parts.back() == "value") parts.pop_back();
    if (parts.empty() || IsRngState(parts)) {
      tree.training_state_.push_back(leaf.name());
      continue;
    }
    std::string path;
    for (const std::string& p : parts) path += (path.empty() ? "" : ".") + p;
    auto [it, inserted] = tree.params_.emplace(path, &array);
    if (!inserted) {
      return InvalidArgument(item.location().item_dir.string() + ": arrays '" +
                             it->second->leaf->name() + "' and '" + leaf.name() +
                             "' are the same parameter '" + path + "'");
    }
  }
  if (tree.params_.empty()) {
    return InvalidArgument(item.location().item_dir.string() +
                           ": no model parameters found (expected params.params.*, decoder.*, "
                           "token_embedder.* or base.* arrays)");
  }
  return tree;
}

const orbax::ItemReader::ArrayEntry* MaxTextTree::Find(std::string_view path) const {
  auto it = params_.find(path);
  return it == params_.end() ? nullptr : it->second;
}

bool MaxTextTree::LooksScanned() const {
  // Unscanned MaxText names each layer right under the decoder:
  // decoder.layers_3, decoder.dense_layers_0, decoder.moe_layers_12. Scanned
  // trees may still have numbered blocks deeper down (decoder.layers.layers_2).
  for (const auto& [path, array] : params_) {
    if (path.rfind("decoder.", 0) != 0) continue;
    const size_t end = path.find('.', 8);
    const std::string_view part = std::string_view(path).substr(8, end - 8);
    const size_t underscore = part.rfind('_');
    if (underscore != std::string_view::npos &&
        part.substr(0, underscore).find("layers") != std::string_view::npos &&
        AllDigits(part.substr(underscore + 1))) {
      return false;
    }
  }
  return true;
}

}  // namespace ckptbridge::engine
