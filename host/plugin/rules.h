// host/plugin/rules.h - the parameter mapping as the host holds it.
//
// A plugin hands its rules across the C boundary as `ckb_rule` tables
// (sdk/include/ckptbridge/plugin_abi.h); the Adapter copies them into these
// plain C++ structs, so nothing the engine touches points into plugin memory.
//
// One Rule describes one conversion unit family:
//
//   hf_inputs    HF tensors per slice, as key templates ("model.layers.{layer}
//                .self_attn.q_proj.weight") with the shape of one slice
//   mt_outputs   MaxText tensors, as dotted paths inside the `params`
//                collection ("decoder.layers.self_attention.query.kernel")
//                with their full (stacked) shapes
//   stack        0, 1 or 2 stacked axes: slice i of MaxText axis `mt_axis`
//                comes from HF index hf_start + hf_stride * i
//   ops          the chain that turns the HF slices into the MaxText slices
//
// A slice is one combination of stack indices; a rule with no stack axes has
// exactly one slice.
#ifndef CKPTBRIDGE_HOST_PLUGIN_RULES_H_
#define CKPTBRIDGE_HOST_PLUGIN_RULES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "ckptbridge/plugin_abi.h"
#include "host/base/shape.h"

namespace ckptbridge {

enum class OpKind : int32_t {
  kTranspose = CKB_OP_TRANSPOSE,
  kReshape = CKB_OP_RESHAPE,
  kScale = CKB_OP_SCALE,
  kAdd = CKB_OP_ADD,
  kInterleave = CKB_OP_INTERLEAVE,
  kDeinterleave = CKB_OP_DEINTERLEAVE,
  kPad = CKB_OP_PAD,
  kTruncate = CKB_OP_TRUNCATE,
  kConcat = CKB_OP_CONCAT,
  kSplit = CKB_OP_SPLIT,
  kCustom = CKB_OP_CUSTOM,
};

// One op; which fields matter depends on `kind` (see plugin_abi.h).
struct OpSpec {
  OpKind kind = OpKind::kTranspose;
  int32_t axis = 0;
  int32_t custom_id = 0;
  std::vector<int64_t> values;  // permutation, shape, split sizes, custom dims
  float factor = 0.0f;
  float inverse_factor = 0.0f;
  int64_t size = 0;
};

struct TensorDecl {
  std::string name;
  Shape dims;
  std::vector<int32_t> axis_meanings;  // empty, or one CKB_AXIS_* per dim
};

struct StackAxis {
  int32_t meaning = CKB_AXIS_LAYERS;  // CKB_AXIS_LAYERS or CKB_AXIS_EXPERTS
  int32_t mt_axis = 0;
  int64_t count = 0;
  int64_t hf_start = 0;
  int64_t hf_stride = 1;
  // The slices are the leading axis of every HF input (ABI 1.2 hf_leading)
  // rather than a {layer}/{expert} placeholder.
  bool hf_leading = false;
};

struct Rule {
  uint32_t flags = 0;  // CKB_RULE_*
  std::vector<TensorDecl> hf_inputs;
  std::vector<TensorDecl> mt_outputs;
  std::vector<StackAxis> stack;
  std::vector<OpSpec> ops;

  bool optional() const { return flags & CKB_RULE_OPTIONAL; }
  bool lossy() const { return flags & CKB_RULE_LOSSY; }
  bool keep_f32() const { return flags & CKB_RULE_KEEP_F32; }
};

struct IgnoreRule {
  int32_t side = CKB_SIDE_HF;  // CKB_SIDE_HF or CKB_SIDE_MAXTEXT
  std::string pattern;         // glob: '*' matches any run of characters
  std::string reason;
};

// Source tensors named `from_prefix...` are read as `to_prefix...`.
struct RenameRule {
  int32_t side = CKB_SIDE_HF;
  std::string from_prefix;
  std::string to_prefix;
};

struct RuleSet {
  std::vector<Rule> rules;
  std::vector<IgnoreRule> ignores;
  std::vector<RenameRule> renames;
};

}  // namespace ckptbridge

#endif  // CKPTBRIDGE_HOST_PLUGIN_RULES_H_
