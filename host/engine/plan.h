// host/engine/plan.h - matching a plugin's rules to a source checkpoint.
//
// Planning reads only headers and metadata. It resolves every rule against
// the source with strict accounting - every source tensor is consumed by a
// rule or declared ignored by the plugin, every tensor a rule needs is there
// with the declared shape - and fails before a byte is written, listing the
// keys, when anything does not add up. The result knows every output
// tensor's name, shape, dtype and chunking, and cuts the work into units: one
// unit per slice of a rule (one layer, one expert, or the whole tensor).
//
// Naming: MaxText tensors are stored in Orbax as `params.params.<path>`
// (TrainState.params holding the Flax `params` collection, as MaxText saves
// them); rules name them by `<path>`.
#ifndef CKPTBRIDGE_HOST_ENGINE_PLAN_H_
#define CKPTBRIDGE_HOST_ENGINE_PLAN_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "host/base/dtype.h"
#include "host/base/shape.h"
#include "host/base/status.h"
#include "host/engine/ops.h"
#include "host/formats/orbax/checkpoint.h"
#include "host/formats/safetensors/reader.h"
#include "host/plugin/rules.h"

namespace ckptbridge::engine {

enum class Direction { kToMaxText, kToHf };

// The Orbax name of MaxText parameter `path`: "params.params." + path.
std::string OrbaxName(std::string_view path);
inline constexpr std::string_view kOrbaxParamsPrefix = "params.params.";

// A MaxText tensor: written (to MaxText) or read (to HF).
struct MtTensor {
  std::string name;  // Orbax name, params.params.<path>
  Shape shape;
  DType dtype = DType::kInvalid;  // written dtype, or the stored one
  Shape chunk_shape;              // when writing
  std::vector<int32_t> axis_meanings;
  std::vector<int32_t> stack_axes;  // MaxText axes that are stacked (one slice per index)
};

// An HF tensor: read (to MaxText) or written (to HF).
struct HfTensor {
  std::string name;  // as the rules name it
  Shape shape;
  DType dtype = DType::kInvalid;
  // To MaxText: the name in the source checkpoint, when a plugin rename maps
  // it to `name` (e.g. "language_model.model.x" read as "model.language_model.x").
  std::string source_name;
};

// One rule, resolved.
struct PlannedRule {
  Rule rule;
  Chain forward;                   // HF slices -> MaxText slices
  Chain backward;                  // MaxText slices -> HF slices (MaxText -> HF only)
  std::vector<size_t> mt_tensors;  // index into Plan::mt_tensors, per output
  std::vector<Shape> mt_slice_shapes;
  int64_t num_slices = 1;
  // The axis of the MaxText slices that the rows of the HF slice (its first
  // axis) become, when every op keeps rows whole and apart (transposes,
  // scales, reshapes of other axes...): such a rule's units can be cut into
  // row blocks. -1 when they cannot (custom transforms, ops along the rows).
  int32_t row_axis = -1;
};

// One unit of work: one slice of one rule.
struct Unit {
  size_t rule = 0;
  std::vector<int64_t> slice;      // index per stack axis of the rule
  std::vector<size_t> hf_tensors;  // index into Plan::hf_tensors, per HF input
  uint64_t bytes = 0;              // bytes this unit reads (for progress)
  // With a stack axis along the HF tensors' leading axis (ABI hf_leading):
  // the index of that axis this unit reads or writes; -1 when the unit
  // covers its HF tensors whole.
  int64_t hf_leading_index = -1;
  // A unit whose working set is too large for the memory budget is cut into
  // blocks of rows of its HF slice (PlannedRule::row_axis): this one covers
  // rows [row_begin, row_end). row_end -1: all rows.
  int64_t row_begin = 0;
  int64_t row_end = -1;

  // Whether this unit covers only part of its HF tensors.
  bool partial() const { return hf_leading_index >= 0 || row_end >= 0; }
};

// The part of HF tensor `hf` that `unit` covers: its shape (the tensor's
// shape, without the leading axis for a leading-axis unit, with only its
// rows for a row block) and where its bytes start inside the tensor's bytes.
struct HfPart {
  Shape shape;
  uint64_t byte_offset = 0;
  uint64_t num_bytes = 0;
};
HfPart UnitHfPart(const HfTensor& hf, const Unit& unit);

// Where `unit` sits in a MaxText output of its rule (of shape `mt_shape`):
// origin and extent in the full (stacked) tensor.
void UnitMtRegion(const PlannedRule& rule, const Unit& unit, const Shape& mt_shape,
                  std::vector<int64_t>& origin, Shape& extent);
// The shape of unit's MaxText slice `i` (rule.mt_slice_shapes, cut to the
// unit's rows).
Shape UnitMtSliceShape(const PlannedRule& rule, const Unit& unit, size_t i);
// The op chain of `unit`: rule.forward / rule.backward, or for a row block
// the same ops resolved for its number of rows.
Result<Chain> UnitChain(const PlannedRule& rule, const Unit& unit, Direction direction);

// Tensors skipped on purpose, grouped by the plugin's reason.
struct IgnoredGroup {
  std::string reason;
  std::vector<std::string> names;
};

struct Plan {
  Direction direction = Direction::kToMaxText;
  std::vector<PlannedRule> rules;
  std::vector<Unit> units;
  std::vector<MtTensor> mt_tensors;
  std::vector<HfTensor> hf_tensors;
  std::vector<IgnoredGroup> ignored;
  uint64_t read_bytes = 0;   // tensor bytes read from the source
  uint64_t write_bytes = 0;  // uncompressed tensor bytes written
};

struct ToMaxTextOptions {
  // Output dtype of every MaxText tensor but those of keep_f32 rules (always
  // float32); nullopt keeps each source dtype.
  std::optional<DType> save_dtype = DType::kBF16;
  // Largest zarr chunk; larger slices are cut along their unstacked axes.
  uint64_t max_chunk_bytes = uint64_t{2} << 30;
  // Units whose working set (UnitMemory) is larger are cut into row blocks
  // where their rule allows (PlannedRule::row_axis); 0: never. The chunks of
  // such tensors follow the blocks along that axis.
  uint64_t max_unit_memory = 0;
};

struct ToHfOptions {
  // Output dtype of every HF tensor but those of keep_f32 rules
  // (KeepF32ExportDType); nullopt keeps each stored dtype.
  std::optional<DType> save_dtype = DType::kBF16;
  // As ToMaxTextOptions::max_unit_memory.
  uint64_t max_unit_memory = 0;
};

// The rules that turn `source` into MaxText tensors. `plugin_label` (e.g.
// "plugin 'llama' 0.1.0") appears in accounting errors.
Result<Plan> PlanToMaxText(const RuleSet& rules, const safetensors::Checkpoint& source,
                           const ToMaxTextOptions& options, std::string_view plugin_label);

// The rules that turn the arrays of `source` into HF tensors.
Result<Plan> PlanToHf(const RuleSet& rules, const orbax::ItemReader& source,
                      const ToHfOptions& options, std::string_view plugin_label);

// The HF dtype of a keep_f32 rule's tensors on export (CKB_RULE_KEEP_F32):
// float32, except that a MaxText array stored narrower than float32 keeps
// its dtype unless `save_dtype` is float32. Into MaxText such tensors are
// always float32.
DType KeepF32ExportDType(DType stored, std::optional<DType> save_dtype);

// Substitutes `{layer}` / `{expert}` in an HF key template for one slice.
std::string ResolveTemplate(const std::string& name_template, const Rule& rule,
                            const std::vector<int64_t>& slice);

// The chunk shape ckptbridge writes: 1 along stacked axes, whole elsewhere,
// then the largest unstacked dims cut to smaller divisors of their size
// until a chunk holds at most `max_chunk_bytes`.
Shape ChooseChunkShape(const Shape& shape, const std::vector<int32_t>& stack_axes,
                       size_t element_size, uint64_t max_chunk_bytes);

// Whether `name` matches glob `pattern` ('*' matches any run of characters).
bool GlobMatch(std::string_view pattern, std::string_view name);

}  // namespace ckptbridge::engine

#endif  // CKPTBRIDGE_HOST_ENGINE_PLAN_H_
