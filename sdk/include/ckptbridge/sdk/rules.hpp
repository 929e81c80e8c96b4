// ckptbridge/sdk/rules.hpp - writing parameter mappings as data.
//
// A plugin describes a model family as a RuleSet: one Rule per MaxText tensor
// (or per group of MaxText tensors cut from one HF tensor). A rule names the
// HF tensor(s) it reads, the MaxText tensor(s) it writes, how slices stack
// (layers, experts) and the chain of ops that turns one HF slice into one
// MaxText slice. The host plans, checks and inverts everything from this data.
//
//   namespace sdk = ckptbridge::sdk;
//   using sdk::Axis;
//
//   // q_proj [Nq*D, E] -> query [E, Nq, D], stacked on axis 1 when scanned.
//   rules.Add()
//       .From("model.layers.{layer}.self_attn.q_proj.weight", {nq * d, e},
//             {Axis::kFused, Axis::kEmbed})
//       .To("decoder.layers.self_attention.query.kernel", {e, nq, d},
//           {Axis::kEmbed, Axis::kHeads, Axis::kHeadDim})
//       .Stack(Axis::kLayers, /*mt_axis=*/1, num_layers)
//       .Then(sdk::Transpose({1, 0}))
//       .Then(sdk::Reshape({e, nq, d}))
//       .Then(sdk::Scale(1.0f / std::sqrt(float(d)), std::sqrt(float(d))));
//
// Conventions
//  - HF names are templates: `{layer}` and `{expert}` become the slice's HF
//    layer / expert index (hf_start + hf_stride * i of the matching Stack()).
//  - MaxText names are dotted paths inside the `params` collection
//    ("decoder.layers.mlp.wi_0.kernel"); the host adds `params.params.`.
//  - To() takes the shape of ONE slice; Stack() inserts the stacked axes, so
//    the full MaxText shape is computed for you ([E, Nq, D] stacked on axis 1
//    over 32 layers is [E, 32, Nq, D]). MaxText puts the layer axis at 1
//    (param_scan_axis) and the expert axis at 0.
//  - Ops run in f32 on the HF slice, in order; the host rounds once to the
//    output dtype at the end. Every op has an exact inverse the host derives
//    (Truncate's inverse pads with zeros, so rules using it are lossy).
//  - Several HF inputs must be joined first (Concat, or Custom); several
//    MaxText outputs must be cut last (Split, one piece per output).
#ifndef CKPTBRIDGE_SDK_RULES_HPP_
#define CKPTBRIDGE_SDK_RULES_HPP_

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ckptbridge/plugin_abi.h"

namespace ckptbridge::sdk {

// What an axis means (CKB_AXIS_*).
enum class Axis : int32_t {
  kOther = CKB_AXIS_OTHER,
  kEmbed = CKB_AXIS_EMBED,
  kVocab = CKB_AXIS_VOCAB,
  kHeads = CKB_AXIS_HEADS,
  kKvHeads = CKB_AXIS_KV_HEADS,
  kHeadDim = CKB_AXIS_HEAD_DIM,
  kMlp = CKB_AXIS_MLP,
  kExperts = CKB_AXIS_EXPERTS,
  kLayers = CKB_AXIS_LAYERS,
  kFused = CKB_AXIS_FUSED,
};

using Dims = std::vector<int64_t>;
using Axes = std::vector<Axis>;

// One transform op (see plugin_abi.h for the exact semantics of each kind).
struct Op {
  int32_t kind = 0;
  int32_t axis = 0;
  int32_t custom_id = 0;
  Dims values;
  float factor = 0.0f;
  float inverse_factor = 0.0f;
  int64_t size = 0;
};

// Permutes axes: output axis i is input axis perm[i].
inline Op Transpose(Dims perm) {
  Op op;
  op.kind = CKB_OP_TRANSPOSE;
  op.values = std::move(perm);
  return op;
}
// Same elements, new row-major shape.
inline Op Reshape(Dims shape) {
  Op op;
  op.kind = CKB_OP_RESHAPE;
  op.values = std::move(shape);
  return op;
}
// x * factor (f32). The inverse multiplies by `inverse_factor`; MaxText's
// exporter uses f32(sqrt(D)) to undo f32(1/sqrt(D)), which is not the f32
// reciprocal of it, so say both.
inline Op Scale(float factor, float inverse_factor) {
  Op op;
  op.kind = CKB_OP_SCALE;
  op.factor = factor;
  op.inverse_factor = inverse_factor;
  return op;
}
// x + constant (f32); the inverse subtracts it.
inline Op Add(float constant) {
  Op op;
  op.kind = CKB_OP_ADD;
  op.factor = constant;
  return op;
}
// On `axis` of even size D: out[2j] = in[j], out[2j+1] = in[j + D/2]. Turns
// the half-split RoPE layout of HF into the adjacent-pair layout (and splits
// interleaved fused gate/up weights with Deinterleave).
inline Op Interleave(int32_t axis) {
  Op op;
  op.kind = CKB_OP_INTERLEAVE;
  op.axis = axis;
  return op;
}
inline Op Deinterleave(int32_t axis) {
  Op op;
  op.kind = CKB_OP_DEINTERLEAVE;
  op.axis = axis;
  return op;
}
// Grows `axis` to `size` with zeros (e.g. vocabulary padding).
inline Op Pad(int32_t axis, int64_t size) {
  Op op;
  op.kind = CKB_OP_PAD;
  op.axis = axis;
  op.size = size;
  return op;
}
// Shrinks `axis` to `size`. Lossy: the inverse pads with zeros.
inline Op Truncate(int32_t axis, int64_t size) {
  Op op;
  op.kind = CKB_OP_TRUNCATE;
  op.axis = axis;
  op.size = size;
  return op;
}
// Joins all HF inputs along `axis`; first op of a rule only.
inline Op Concat(int32_t axis) {
  Op op;
  op.kind = CKB_OP_CONCAT;
  op.axis = axis;
  return op;
}
// Cuts along `axis` into pieces of the given sizes, one per MaxText output;
// last op of a rule only.
inline Op Split(int32_t axis, Dims sizes) {
  Op op;
  op.kind = CKB_OP_SPLIT;
  op.axis = axis;
  op.values = std::move(sizes);
  return op;
}
// The plugin's own transform `id` (Adapter::ApplyCustom), reading the raw HF
// inputs and producing one f32 tensor of `output_dims`; first op only, and it
// makes the rule one-directional (declare a separate to-HF rule).
inline Op Custom(int32_t id, Dims output_dims) {
  Op op;
  op.kind = CKB_OP_CUSTOM;
  op.custom_id = id;
  op.values = std::move(output_dims);
  return op;
}

// A tensor named by a rule: for HF a key template and the shape of one slice;
// for MaxText a dotted path and, once the rule is final, the full shape.
struct TensorDecl {
  std::string name;
  Dims dims;
  Axes axes;
};

struct StackAxis {
  Axis meaning = Axis::kLayers;
  int32_t mt_axis = 0;
  int64_t count = 0;
  int64_t hf_start = 0;
  int64_t hf_stride = 1;
  bool hf_leading = false;  // see Rule::StackLeading
};

class Rule {
 public:
  // Adds an HF input: key template, shape of one slice, optional axis meanings.
  Rule& From(std::string hf_template, Dims dims, Axes axes = {}) {
    hf_inputs_.push_back({std::move(hf_template), std::move(dims), std::move(axes)});
    return *this;
  }
  // Adds a MaxText output: dotted path and the shape of ONE slice (without
  // the stacked axes, which Stack() inserts).
  Rule& To(std::string mt_path, Dims slice_dims, Axes axes = {}) {
    mt_outputs_.push_back({std::move(mt_path), std::move(slice_dims), std::move(axes)});
    return *this;
  }
  // Stacks `count` slices on MaxText axis `mt_axis` (an axis of the full
  // shape). Slice i reads HF index hf_start + hf_stride * i of the `{layer}`
  // (Axis::kLayers) or `{expert}` (Axis::kExperts) placeholder.
  Rule& Stack(Axis meaning, int32_t mt_axis, int64_t count, int64_t hf_start = 0,
              int64_t hf_stride = 1) {
    stack_.push_back({meaning, mt_axis, count, hf_start, hf_stride});
    return *this;
  }
  // Stacks `count` slices on MaxText axis `mt_axis` that an HF tensor holds
  // all together along its leading axis: GPT-OSS's `mlp.experts.down_proj`
  // is [experts, F, E]. From() then takes the whole HF tensor (leading axis
  // included), Then() ops act on one slice (without it), and the host
  // converts one slice at a time, so memory follows one expert, not all.
  // Needs a host of ABI 1.2: set PluginDefinition::abi_minor = 2.
  Rule& StackLeading(Axis meaning, int32_t mt_axis, int64_t count) {
    stack_.push_back({meaning, mt_axis, count, 0, 1, true});
    return *this;
  }
  Rule& Then(Op op) {
    ops_.push_back(std::move(op));
    return *this;
  }
  // The rule is skipped (no error) when none of its HF tensors exist.
  Rule& Optional() {
    flags_ |= CKB_RULE_OPTIONAL;
    return *this;
  }
  // The rule loses information by design (truncation, dequantization).
  Rule& Lossy() {
    flags_ |= CKB_RULE_LOSSY;
    return *this;
  }
  // The outputs stay float32 whatever the save dtype (ABI 1.2: set
  // PluginDefinition::abi_minor = 2).
  Rule& KeepF32() {
    flags_ |= CKB_RULE_KEEP_F32;
    return *this;
  }

  const std::vector<TensorDecl>& hf_inputs() const { return hf_inputs_; }
  const std::vector<TensorDecl>& mt_outputs() const { return mt_outputs_; }
  const std::vector<StackAxis>& stack() const { return stack_; }
  const std::vector<Op>& ops() const { return ops_; }
  uint32_t flags() const { return flags_; }

  // A MaxText output with the stacked axes inserted: the full shape.
  TensorDecl FullOutput(size_t i) const {
    TensorDecl full = mt_outputs_[i];
    std::vector<StackAxis> by_axis = stack_;
    std::sort(by_axis.begin(), by_axis.end(),
              [](const StackAxis& a, const StackAxis& b) { return a.mt_axis < b.mt_axis; });
    const bool has_axes = !full.axes.empty();
    for (const StackAxis& s : by_axis) {
      const auto at = static_cast<size_t>(
          std::clamp<int64_t>(s.mt_axis, 0, static_cast<int64_t>(full.dims.size())));
      full.dims.insert(full.dims.begin() + static_cast<std::ptrdiff_t>(at), s.count);
      if (has_axes)
        full.axes.insert(full.axes.begin() + static_cast<std::ptrdiff_t>(at), s.meaning);
    }
    return full;
  }

 private:
  std::vector<TensorDecl> hf_inputs_;
  std::vector<TensorDecl> mt_outputs_;
  std::vector<StackAxis> stack_;
  std::vector<Op> ops_;
  uint32_t flags_ = 0;
};

enum class Side : int32_t { kHf = CKB_SIDE_HF, kMaxText = CKB_SIDE_MAXTEXT };

struct Ignore {
  Side side = Side::kHf;
  std::string pattern;
  std::string reason;
};

class RuleSet {
 public:
  // A new rule, filled in by chaining.
  Rule& Add() {
    rules_.emplace_back();
    return rules_.back();
  }
  // Source tensors matching `pattern` (glob, '*' = any run of characters) on
  // `side` are known and deliberately not converted.
  void Ignore(Side side, std::string pattern, std::string reason) {
    ignores_.push_back({side, std::move(pattern), std::move(reason)});
  }

  // HF source tensors named `from_prefix...` are read as `to_prefix...`,
  // the names the rules use (checkpoints of one family named two ways).
  void Rename(std::string from_prefix, std::string to_prefix) {
    renames_.push_back({std::move(from_prefix), std::move(to_prefix)});
  }

  const std::vector<Rule>& rules() const { return rules_; }
  const std::vector<sdk::Ignore>& ignores() const { return ignores_; }
  const std::vector<std::pair<std::string, std::string>>& renames() const { return renames_; }

 private:
  std::vector<Rule> rules_;
  std::vector<sdk::Ignore> ignores_;
  std::vector<std::pair<std::string, std::string>> renames_;
};

}  // namespace ckptbridge::sdk

#endif  // CKPTBRIDGE_SDK_RULES_HPP_
