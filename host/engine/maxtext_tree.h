// host/engine/maxtext_tree.h - finding the model parameters in an Orbax item,
// whichever way MaxText saved them.
//
// MaxText writes its parameters in three tree layouts (its own
// checkpoint_conversion/utils/utils.py: detect_and_extract_checkpoint):
//
//   Linen      {params: {params: {decoder: ..., token_embedder: ...}}, opt_state, step}
//              (or a single `params` level)
//   NNX-SFT    {decoder: {...: {kernel: {value: ARRAY}}}, token_embedder: ..., ...}
//   NNX-RL     {base: {decoder: ..., token_embedder: ...}}
//
// and names layers either `layers_3` (Linen) or `layers` + sequence index 3
// (NNX lists). MaxTextTree maps every parameter to one canonical path - the
// dotted Linen path inside the `params` collection that plugin rules use
// ("decoder.layers_3.self_attention.query.kernel") - and sets everything else
// aside as training state (optimizer moments, step, RNG state), which is never
// converted.
#ifndef CKPTBRIDGE_HOST_ENGINE_MAXTEXT_TREE_H_
#define CKPTBRIDGE_HOST_ENGINE_MAXTEXT_TREE_H_

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "host/base/status.h"
#include "host/formats/orbax/checkpoint.h"

namespace ckptbridge::engine {

enum class TreeKind { kLinen, kLinenSingleParams, kNnxSft, kNnxRl };

// "Linen", "Linen (single params level)", "NNX-SFT", "NNX-RL".
std::string_view TreeKindName(TreeKind kind);

class MaxTextTree {
 public:
  // Classifies every array leaf of `item`. Fails when two leaves map to the
  // same canonical path, or when no parameter is found at all.
  static Result<MaxTextTree> Build(const orbax::ItemReader& item);

  TreeKind kind() const { return kind_; }

  // The parameter at canonical `path`, or nullptr.
  const orbax::ItemReader::ArrayEntry* Find(std::string_view path) const;

  // Every parameter, by canonical path.
  const std::map<std::string, const orbax::ItemReader::ArrayEntry*, std::less<>>& params() const {
    return params_;
  }
  // Array leaves that are not parameters (optimizer state, step, RNG state),
  // by their Orbax names.
  const std::vector<std::string>& training_state() const { return training_state_; }
  // Whether the layers look stacked: no canonical path has a `layers_<n>`
  // or `dense_layers_<n>`-style component.
  bool LooksScanned() const;

 private:
  TreeKind kind_ = TreeKind::kLinen;
  std::map<std::string, const orbax::ItemReader::ArrayEntry*, std::less<>> params_;
  std::vector<std::string> training_state_;
};

}  // namespace ckptbridge::engine

#endif  // CKPTBRIDGE_HOST_ENGINE_MAXTEXT_TREE_H_
