#include "host/engine/plan.h"

#include <fnmatch.h>

#include <algorithm>
#include <map>
#include <set>

#include "host/base/numeric.h"
#include "host/engine/execute.h"
#include "host/engine/maxtext_tree.h"

namespace ckptbridge::engine {
namespace {

constexpr size_t kMaxListed = 12;

std::string ListNames(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < kMaxListed; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > kMaxListed)
    s += ", ... and " + std::to_string(names.size() - kMaxListed) + " more";
  return s;
}

std::string_view Placeholder(int32_t meaning) {
  return meaning == CKB_AXIS_LAYERS ? "{layer}" : "{expert}";
}

std::string RuleLabel(std::string_view plugin_label, const Rule& rule) {
  std::string s(plugin_label);
  s += ": rule for '";
  s += rule.mt_outputs.empty() ? std::string("?") : rule.mt_outputs[0].name;
  s += "'";
  return s;
}

// What a rule's declarations imply, checked once.
struct RuleShapes {
  std::vector<Shape> slice_shapes;            // per MaxText output
  std::vector<std::vector<int32_t>> stacked;  // per output: its stacked axes, ascending
  std::vector<int64_t> counts;                // per stack axis
  std::vector<Shape> hf_slice_shapes;         // per HF input: what the ops see
  int leading = -1;                           // the stack axis along HF leading axes
};

Result<RuleShapes> CheckRule(const Rule& rule, std::string_view label) {
  auto fail = [&](const std::string& why) {
    return InvalidArgument(std::string(label) + ": " + why);
  };
  if (rule.hf_inputs.empty() || rule.mt_outputs.empty())
    return fail("needs HF inputs and MaxText outputs");
  if (rule.stack.size() > 2) return fail("stacks more than two axes");
  RuleShapes shapes;
  std::set<int32_t> meanings, axes;
  for (const TensorDecl& in : rule.hf_inputs) shapes.hf_slice_shapes.push_back(in.dims);
  if (std::count_if(rule.stack.begin(), rule.stack.end(),
                    [](const StackAxis& s) { return s.hf_leading; }) > 1) {
    return fail("has two stack axes along the HF leading axis");
  }
  for (size_t k = 0; k < rule.stack.size(); ++k) {
    const StackAxis& s = rule.stack[k];
    if (s.meaning != CKB_AXIS_LAYERS && s.meaning != CKB_AXIS_EXPERTS) {
      return fail("a stacked axis must mean layers or experts");
    }
    if (!meanings.insert(s.meaning).second) return fail("stacks the same placeholder twice");
    if (!axes.insert(s.mt_axis).second) return fail("stacks two things on one axis");
    if (s.count < 1) return fail("stack count must be at least 1");
    shapes.counts.push_back(s.count);
    if (s.hf_leading) {
      // The slices are the leading axis of every HF input; the ops see one.
      shapes.leading = static_cast<int>(k);
      for (size_t i = 0; i < rule.hf_inputs.size(); ++i) {
        const TensorDecl& in = rule.hf_inputs[i];
        if (in.dims.empty() || in.dims[0] != s.count) {
          return fail("stacks " + std::to_string(s.count) +
                      " slices along the leading axis of the HF tensors, but '" + in.name +
                      "' is " + ShapeString(in.dims));
        }
        shapes.hf_slice_shapes[i].erase(shapes.hf_slice_shapes[i].begin());
      }
      continue;
    }
    bool used = false;
    for (const TensorDecl& in : rule.hf_inputs) {
      used |= in.name.find(Placeholder(s.meaning)) != std::string::npos;
    }
    if (!used) {
      return fail("stacks on " + std::string(Placeholder(s.meaning)) +
                  " but no HF key template contains it");
    }
  }
  for (const TensorDecl& in : rule.hf_inputs) {
    for (int32_t m : {CKB_AXIS_LAYERS, CKB_AXIS_EXPERTS}) {
      const bool placeholder_stacked =
          meanings.count(m) &&
          !(shapes.leading >= 0 && rule.stack[static_cast<size_t>(shapes.leading)].meaning == m);
      if (in.name.find(Placeholder(m)) != std::string::npos && !placeholder_stacked) {
        return fail("HF key template '" + in.name + "' uses " + std::string(Placeholder(m)) +
                    " but the rule does not stack it");
      }
    }
  }
  for (const TensorDecl& out : rule.mt_outputs) {
    Shape slice = out.dims;
    std::vector<int32_t> stacked(axes.begin(), axes.end());
    for (const StackAxis& s : rule.stack) {
      if (s.mt_axis < 0 || static_cast<size_t>(s.mt_axis) >= out.dims.size() ||
          out.dims[s.mt_axis] != s.count) {
        return fail("MaxText shape " + ShapeString(out.dims) + " of '" + out.name +
                    "' has no axis " + std::to_string(s.mt_axis) + " of size " +
                    std::to_string(s.count) + " to stack on");
      }
    }
    for (auto it = stacked.rbegin(); it != stacked.rend(); ++it) slice.erase(slice.begin() + *it);
    shapes.slice_shapes.push_back(slice);
    shapes.stacked.push_back(stacked);
  }
  return shapes;
}

// Calls fn(slice) for every combination of stack indices, row-major.
template <typename Fn>
Status ForEachSlice(const std::vector<int64_t>& counts, Fn&& fn) {
  std::vector<int64_t> slice(counts.size(), 0);
  for (;;) {
    CKB_RETURN_IF_ERROR(fn(slice));
    size_t d = counts.size();
    while (d > 0) {
      --d;
      if (++slice[d] < counts[d]) break;
      slice[d] = 0;
      if (d == 0) return Status::Ok();
    }
    if (counts.empty()) return Status::Ok();
  }
}

void AddIgnored(std::vector<IgnoredGroup>& groups, const std::string& reason, std::string name) {
  for (IgnoredGroup& g : groups) {
    if (g.reason == reason) {
      g.names.push_back(std::move(name));
      return;
    }
  }
  groups.push_back({reason, {std::move(name)}});
}

const IgnoreRule* FindIgnore(const RuleSet& rules, int32_t side, std::string_view name) {
  for (const IgnoreRule& ignore : rules.ignores) {
    if (ignore.side == side && GlobMatch(ignore.pattern, name)) return &ignore;
  }
  return nullptr;
}

Status CheckChainOutputs(const Chain& chain, const RuleShapes& shapes, std::string_view label) {
  if (chain.outputs != shapes.slice_shapes) {
    std::string got, want;
    for (const Shape& s : chain.outputs) got += (got.empty() ? "" : ", ") + ShapeString(s);
    for (const Shape& s : shapes.slice_shapes) want += (want.empty() ? "" : ", ") + ShapeString(s);
    return InvalidArgument(std::string(label) + ": its ops turn the HF slice into " + got +
                           " but the MaxText slice is " + want);
  }
  return Status::Ok();
}

// The source tensors by the names the rules use: plugin renames applied.
class RenamedSource {
 public:
  static Result<RenamedSource> Build(const RuleSet& rules, const safetensors::Checkpoint& source) {
    RenamedSource index;
    for (const safetensors::CheckpointTensor& t : source.tensors()) {
      std::string name = t.info->name;
      for (const RenameRule& rename : rules.renames) {
        if (rename.side == CKB_SIDE_HF && name.rfind(rename.from_prefix, 0) == 0) {
          name = rename.to_prefix + name.substr(rename.from_prefix.size());
          break;
        }
      }
      auto [it, inserted] = index.by_name_.emplace(name, &t);
      if (!inserted) {
        return InvalidArgument(source.path().string() + " has both '" + it->second->info->name +
                               "' and '" + t.info->name + "', which name the same tensor '" + name +
                               "'");
      }
    }
    return index;
  }
  const safetensors::CheckpointTensor* Find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
  }
  const std::map<std::string, const safetensors::CheckpointTensor*>& all() const {
    return by_name_;
  }

 private:
  std::map<std::string, const safetensors::CheckpointTensor*> by_name_;
};

}  // namespace

HfPart UnitHfPart(const HfTensor& hf, const Unit& unit) {
  HfPart part;
  part.shape = hf.shape;
  part.num_bytes = static_cast<uint64_t>(NumElementsUnchecked(hf.shape)) * DTypeSize(hf.dtype);
  if (unit.hf_leading_index >= 0 && !hf.shape.empty() && hf.shape[0] > 0) {
    part.shape.erase(part.shape.begin());
    part.num_bytes /= static_cast<uint64_t>(hf.shape[0]);
    part.byte_offset = static_cast<uint64_t>(unit.hf_leading_index) * part.num_bytes;
  }
  if (unit.row_end >= 0 && !part.shape.empty() && part.shape[0] > 0) {
    // Rows are contiguous: a block of them is one byte range.
    const uint64_t row_bytes = part.num_bytes / static_cast<uint64_t>(part.shape[0]);
    part.byte_offset += static_cast<uint64_t>(unit.row_begin) * row_bytes;
    part.shape[0] = unit.row_end - unit.row_begin;
    part.num_bytes = static_cast<uint64_t>(part.shape[0]) * row_bytes;
  }
  return part;
}

namespace {

// The MaxText full-tensor axis of slice axis `slice_axis` (stacked axes
// skipped).
int32_t FullAxis(const PlannedRule& rule, int32_t slice_axis, size_t rank) {
  std::vector<bool> stacked(rank, false);
  for (const StackAxis& s : rule.rule.stack) {
    if (s.mt_axis >= 0 && static_cast<size_t>(s.mt_axis) < rank) stacked[s.mt_axis] = true;
  }
  int32_t seen = -1;
  for (size_t a = 0; a < rank; ++a) {
    if (stacked[a]) continue;
    if (++seen == slice_axis) return static_cast<int32_t>(a);
  }
  return -1;
}

// Follows axis 0 of the chain's inputs through its steps: the output axis it
// becomes, or -1 when some op mixes rows or needs them all (a custom
// transform, a reshape that merges or splits them, interleave, pad, concat
// or split along them). `retarget` (optional) receives the ops with the row
// count of a reshape replaced by `rows`.
int32_t FollowRows(const Chain& chain, int64_t rows, std::vector<OpSpec>* retarget) {
  if (chain.inputs.empty()) return -1;
  for (const Shape& in : chain.inputs) {
    if (in.empty() || in[0] != chain.inputs[0][0]) return -1;
  }
  int32_t axis = 0;
  for (const ChainStep& step : chain.steps) {
    OpSpec op = step.op;
    switch (op.kind) {
      case OpKind::kTranspose: {
        const auto it = std::find(op.values.begin(), op.values.end(), axis);
        if (it == op.values.end()) return -1;
        axis = static_cast<int32_t>(it - op.values.begin());
        break;
      }
      case OpKind::kReshape: {
        // The rows and every axis after them must come out unchanged, at
        // the end: only the axes before the rows are regrouped.
        const Shape& in = step.in.at(0);
        const Shape& out = step.out.at(0);
        const size_t tail = in.size() - static_cast<size_t>(axis);
        if (out.size() < tail) return -1;
        for (size_t i = 0; i < tail; ++i) {
          if (in[static_cast<size_t>(axis) + i] != out[out.size() - tail + i]) return -1;
        }
        axis = static_cast<int32_t>(out.size() - tail);
        if (retarget) op.values[static_cast<size_t>(axis)] = rows;
        break;
      }
      case OpKind::kScale:
      case OpKind::kAdd:
        break;
      case OpKind::kInterleave:
      case OpKind::kDeinterleave:
      case OpKind::kPad:
      case OpKind::kTruncate:
      case OpKind::kConcat:
      case OpKind::kSplit:
        if (op.axis == axis) return -1;
        break;
      case OpKind::kCustom:
        return -1;
    }
    if (retarget) retarget->push_back(std::move(op));
  }
  return axis;
}

// Cuts every unit whose working set exceeds `limit` into row blocks, where
// its rule allows, and (to MaxText) makes the chunks of the rule's tensors
// follow the blocks along the row axis.
void CutLargeUnits(Plan& plan, uint64_t limit) {
  if (limit == 0) return;
  std::vector<Unit> units;
  units.reserve(plan.units.size());
  std::vector<int64_t> block_rows(plan.rules.size(), 0);  // per rule; 0: not cut
  for (Unit& unit : plan.units) {
    PlannedRule& rule = plan.rules[unit.rule];
    const uint64_t memory = UnitMemory(plan, unit);
    if (rule.row_axis < 0 || memory <= limit || rule.forward.inputs.empty()) {
      units.push_back(std::move(unit));
      continue;
    }
    const int64_t rows = rule.forward.inputs[0][0];
    int64_t& block = block_rows[unit.rule];
    if (block == 0) {
      const uint64_t pieces = (memory + limit - 1) / limit;
      block = std::max<int64_t>(1, rows / static_cast<int64_t>(pieces));
      if (plan.direction == Direction::kToMaxText) {
        // Chunks must not straddle two blocks: take the chunk's extent
        // along the row axis when it is already smaller, else cut it.
        for (size_t i = 0; i < rule.mt_tensors.size(); ++i) {
          MtTensor& mt = plan.mt_tensors[rule.mt_tensors[i]];
          const int32_t axis = FullAxis(rule, rule.row_axis, mt.shape.size());
          if (axis < 0) continue;
          if (mt.chunk_shape[axis] < block) {
            block = mt.chunk_shape[axis];
          }
        }
        for (size_t i = 0; i < rule.mt_tensors.size(); ++i) {
          MtTensor& mt = plan.mt_tensors[rule.mt_tensors[i]];
          const int32_t axis = FullAxis(rule, rule.row_axis, mt.shape.size());
          if (axis >= 0) mt.chunk_shape[axis] = block;
        }
      }
    }
    if (block >= rows) {
      units.push_back(std::move(unit));
      continue;
    }
    for (int64_t begin = 0; begin < rows; begin += block) {
      Unit part = unit;
      part.row_begin = begin;
      part.row_end = std::min(rows, begin + block);
      part.bytes =
          unit.bytes * static_cast<uint64_t>(part.row_end - begin) / static_cast<uint64_t>(rows);
      units.push_back(std::move(part));
    }
  }
  plan.units = std::move(units);
}

}  // namespace

void UnitMtRegion(const PlannedRule& rule, const Unit& unit, const Shape& mt_shape,
                  std::vector<int64_t>& origin, Shape& extent) {
  origin.assign(mt_shape.size(), 0);
  extent = mt_shape;
  for (size_t k = 0; k < rule.rule.stack.size(); ++k) {
    const int32_t axis = rule.rule.stack[k].mt_axis;
    origin[axis] = unit.slice[k];
    extent[axis] = 1;
  }
  if (unit.row_end >= 0) {
    const int32_t axis = FullAxis(rule, rule.row_axis, mt_shape.size());
    if (axis >= 0) {
      origin[axis] = unit.row_begin;
      extent[axis] = unit.row_end - unit.row_begin;
    }
  }
}

Shape UnitMtSliceShape(const PlannedRule& rule, const Unit& unit, size_t i) {
  Shape shape = rule.mt_slice_shapes.at(i);
  if (unit.row_end >= 0 && rule.row_axis >= 0 &&
      static_cast<size_t>(rule.row_axis) < shape.size()) {
    shape[rule.row_axis] = unit.row_end - unit.row_begin;
  }
  return shape;
}

Result<Chain> UnitChain(const PlannedRule& rule, const Unit& unit, Direction direction) {
  if (unit.row_end < 0) return direction == Direction::kToMaxText ? rule.forward : rule.backward;
  const int64_t rows = unit.row_end - unit.row_begin;
  std::vector<OpSpec> ops;
  if (FollowRows(rule.forward, rows, &ops) != rule.row_axis) {
    return Internal("the rows of the rule for '" + rule.rule.mt_outputs[0].name +
                    "' cannot be cut");
  }
  std::vector<Shape> inputs = rule.forward.inputs;
  for (Shape& in : inputs) in[0] = rows;
  CKB_ASSIGN_OR_RETURN(Chain forward, ResolveChain(ops, inputs));
  if (direction == Direction::kToMaxText) return forward;
  return InvertChain(forward);
}

std::string OrbaxName(std::string_view path) {
  std::string name(kOrbaxParamsPrefix);
  name += path;
  return name;
}

bool GlobMatch(std::string_view pattern, std::string_view name) {
  return ::fnmatch(std::string(pattern).c_str(), std::string(name).c_str(), 0) == 0;
}

std::string ResolveTemplate(const std::string& name_template, const Rule& rule,
                            const std::vector<int64_t>& slice) {
  std::string name = name_template;
  for (size_t k = 0; k < rule.stack.size(); ++k) {
    const StackAxis& s = rule.stack[k];
    if (s.hf_leading) continue;  // an index into the tensor, not its name
    const std::string value = std::to_string(s.hf_start + s.hf_stride * slice[k]);
    const std::string_view placeholder = Placeholder(s.meaning);
    for (size_t at = name.find(placeholder); at != std::string::npos;
         at = name.find(placeholder, at + value.size())) {
      name.replace(at, placeholder.size(), value);
    }
  }
  return name;
}

Shape ChooseChunkShape(const Shape& shape, const std::vector<int32_t>& stack_axes,
                       size_t element_size, uint64_t max_chunk_bytes) {
  Shape chunk = shape;
  for (int64_t& d : chunk) d = std::max<int64_t>(d, 1);
  for (int32_t a : stack_axes) chunk[a] = 1;
  auto bytes = [&] {
    uint64_t n = element_size;
    for (int64_t d : chunk) n *= static_cast<uint64_t>(d);
    return n;
  };
  while (bytes() > max_chunk_bytes) {
    // Cut the largest unstacked dim to the next smaller divisor of its size,
    // so chunks tile the array exactly (as Orbax's choose_chunk_shape does).
    int best = -1;
    for (size_t i = 0; i < chunk.size(); ++i) {
      if (chunk[i] > 1 && (best < 0 || chunk[i] > chunk[best])) best = static_cast<int>(i);
    }
    if (best < 0) break;
    int64_t next = chunk[best] - 1;
    while (next > 1 && shape[best] % next != 0) --next;
    chunk[best] = next;
  }
  return chunk;
}

DType KeepF32ExportDType(DType stored, std::optional<DType> save_dtype) {
  // Into MaxText a kept tensor is always float32. On export it stays
  // float32 unless the MaxText array is stored narrower: widening that would
  // add bytes and no information (a checkpoint written by another converter
  // may hold it in bfloat16) - unless float32 was asked for. Which tensors a
  // family keeps, and why, is the plugin's to say (CKB_RULE_KEEP_F32).
  if (DTypeSize(stored) >= 4) return DType::kF32;
  if (save_dtype == DType::kF32) return DType::kF32;
  return stored;
}

Result<Plan> PlanToMaxText(const RuleSet& rules, const safetensors::Checkpoint& source,
                           const ToMaxTextOptions& options, std::string_view plugin_label) {
  Plan plan;
  plan.direction = Direction::kToMaxText;
  std::map<std::string, size_t> hf_index;
  std::set<std::string> mt_names;
  std::vector<std::string> missing;
  CKB_ASSIGN_OR_RETURN(const RenamedSource renamed, RenamedSource::Build(rules, source));

  for (const Rule& rule : rules.rules) {
    const std::string label = RuleLabel(plugin_label, rule);
    CKB_ASSIGN_OR_RETURN(RuleShapes shapes, CheckRule(rule, label));

    if (rule.optional()) {
      bool any = false;
      CKB_RETURN_IF_ERROR(ForEachSlice(shapes.counts, [&](const std::vector<int64_t>& slice) {
        for (const TensorDecl& in : rule.hf_inputs) {
          any |= renamed.Find(ResolveTemplate(in.name, rule, slice)) != nullptr;
        }
        return Status::Ok();
      }));
      if (!any) continue;
    }

    Result<Chain> forward = ResolveChain(rule.ops, shapes.hf_slice_shapes);
    if (!forward.ok()) return forward.status().WithContext(label);
    CKB_RETURN_IF_ERROR(CheckChainOutputs(*forward, shapes, label));
    const bool custom = !rule.ops.empty() && rule.ops[0].kind == OpKind::kCustom;

    PlannedRule planned;
    planned.rule = rule;
    planned.forward = std::move(*forward);
    planned.row_axis = FollowRows(planned.forward, 0, nullptr);
    planned.mt_slice_shapes = shapes.slice_shapes;
    planned.num_slices = 1;
    for (int64_t c : shapes.counts) planned.num_slices *= c;
    const size_t rule_index = plan.rules.size();

    std::optional<DType> first_source_dtype;
    Status status = ForEachSlice(shapes.counts, [&](const std::vector<int64_t>& slice) {
      Unit unit;
      unit.rule = rule_index;
      unit.slice = slice;
      if (shapes.leading >= 0) unit.hf_leading_index = slice[static_cast<size_t>(shapes.leading)];
      for (const TensorDecl& in : rule.hf_inputs) {
        const std::string name = ResolveTemplate(in.name, rule, slice);
        const safetensors::CheckpointTensor* t = renamed.Find(name);
        if (!t) {
          missing.push_back(name);
          continue;
        }
        const std::string file = t->file->path().filename().string();
        if (t->info->shape != in.dims) {
          return InvalidArgument(file + ": tensor '" + t->info->name + "' has shape " +
                                 ShapeString(t->info->shape) + " but " + std::string(plugin_label) +
                                 " expects " + ShapeString(in.dims) +
                                 " from config.json (does config.json match the weights?)");
        }
        if (!custom && !IsFloating(t->info->dtype)) {
          return InvalidArgument(file + ": tensor '" + t->info->name + "' has dtype " +
                                 std::string(SafetensorsName(t->info->dtype)) +
                                 " but floating-point weights are expected (quantized or packed "
                                 "checkpoints need their own plugin support)");
        }
        if (!first_source_dtype) first_source_dtype = t->info->dtype;
        auto [it, inserted] = hf_index.emplace(name, plan.hf_tensors.size());
        if (inserted) {
          plan.hf_tensors.push_back({name, t->info->shape, t->info->dtype, t->info->name});
          plan.read_bytes += t->info->num_bytes();
        }
        unit.hf_tensors.push_back(it->second);
        unit.bytes += unit.hf_leading_index >= 0
                          ? t->info->num_bytes() / static_cast<uint64_t>(in.dims[0])
                          : t->info->num_bytes();
      }
      plan.units.push_back(std::move(unit));
      return Status::Ok();
    });
    CKB_RETURN_IF_ERROR(status);

    for (size_t i = 0; i < rule.mt_outputs.size(); ++i) {
      const TensorDecl& out = rule.mt_outputs[i];
      MtTensor mt;
      mt.name = OrbaxName(out.name);
      if (!mt_names.insert(mt.name).second) {
        return InvalidArgument(label + ": MaxText tensor '" + out.name +
                               "' is produced by two rules");
      }
      mt.shape = out.dims;
      mt.axis_meanings = out.axis_meanings;
      mt.stack_axes = shapes.stacked[i];
      mt.dtype = options.save_dtype.value_or(first_source_dtype.value_or(DType::kF32));
      // A custom transform (dequantization) turns packed or 8-bit inputs into
      // real values; "keep the source dtype" then means the model's working
      // precision, bfloat16.
      if (custom && !options.save_dtype && !WritableFromF32(mt.dtype)) mt.dtype = DType::kBF16;
      // The precision policy: a keep_f32 rule's tensors
      // are float32 whatever --save-dtype says (see KeepF32ExportDType).
      if (rule.keep_f32()) mt.dtype = DType::kF32;
      if (!WritableFromF32(mt.dtype)) {
        return InvalidArgument("--save-dtype source: '" + out.name + "' would be " +
                               std::string(ZarrName(mt.dtype)) +
                               ", which ckptbridge cannot write; choose bfloat16 or float32");
      }
      mt.chunk_shape =
          ChooseChunkShape(mt.shape, mt.stack_axes, DTypeSize(mt.dtype), options.max_chunk_bytes);
      Result<int64_t> bytes = NumBytes(mt.shape, DTypeSize(mt.dtype));
      if (!bytes.ok()) return bytes.status().WithContext(label);
      plan.write_bytes += static_cast<uint64_t>(*bytes);
      planned.mt_tensors.push_back(plan.mt_tensors.size());
      plan.mt_tensors.push_back(std::move(mt));
    }
    plan.rules.push_back(std::move(planned));
  }

  if (!missing.empty()) {
    return NotFound(std::string(plugin_label) + " needs " + std::to_string(missing.size()) +
                    " tensor" + (missing.size() == 1 ? "" : "s") + " that " +
                    (missing.size() == 1 ? "is" : "are") + " not in " + source.path().string() +
                    ": " + ListNames(missing) +
                    " (a config.json that does not match the weights, or a partial download?)");
  }

  std::vector<std::string> unmapped;
  for (const auto& [name, t] : renamed.all()) {
    if (hf_index.count(name)) continue;
    const IgnoreRule* ignore = FindIgnore(rules, CKB_SIDE_HF, name);
    if (!ignore) ignore = FindIgnore(rules, CKB_SIDE_HF, t->info->name);
    if (ignore) {
      AddIgnored(plan.ignored, ignore->reason, t->info->name);
    } else {
      unmapped.push_back(t->info->name);
    }
  }
  std::sort(unmapped.begin(), unmapped.end());
  if (!unmapped.empty()) {
    return InvalidArgument(source.path().string() + " has " + std::to_string(unmapped.size()) +
                           " tensor" + (unmapped.size() == 1 ? "" : "s") + " that " +
                           std::string(plugin_label) + " does not map: " + ListNames(unmapped) +
                           " (a different model family, or a layout this plugin does not know)");
  }
  CutLargeUnits(plan, options.max_unit_memory);
  return plan;
}

Result<Plan> PlanToHf(const RuleSet& rules, const orbax::ItemReader& source,
                      const ToHfOptions& options, std::string_view plugin_label) {
  Plan plan;
  plan.direction = Direction::kToHf;
  std::map<std::string, size_t> mt_index;
  std::set<std::string> hf_names;
  std::map<std::string, size_t> hf_parts;  // HF tensors written in leading-axis parts
  std::vector<std::string> missing;
  const std::string item = source.location().item_dir.string();
  CKB_ASSIGN_OR_RETURN(const MaxTextTree tree, MaxTextTree::Build(source));

  for (const Rule& rule : rules.rules) {
    const std::string label = RuleLabel(plugin_label, rule);
    CKB_ASSIGN_OR_RETURN(RuleShapes shapes, CheckRule(rule, label));

    std::vector<const orbax::ItemReader::ArrayEntry*> arrays;
    size_t found = 0;
    for (const TensorDecl& out : rule.mt_outputs) {
      arrays.push_back(tree.Find(out.name));
      found += arrays.back() != nullptr;
    }
    if (found == 0 && rule.optional()) continue;
    if (found < arrays.size()) {
      for (size_t i = 0; i < arrays.size(); ++i) {
        if (!arrays[i]) missing.push_back(rule.mt_outputs[i].name);
      }
      continue;
    }

    Result<Chain> forward = ResolveChain(rule.ops, shapes.hf_slice_shapes);
    if (!forward.ok()) return forward.status().WithContext(label);
    CKB_RETURN_IF_ERROR(CheckChainOutputs(*forward, shapes, label));
    Result<Chain> backward = InvertChain(*forward);
    if (!backward.ok()) {
      return Unsupported(label + ": cannot be exported: " + backward.status().message());
    }

    PlannedRule planned;
    planned.rule = rule;
    planned.forward = std::move(*forward);
    planned.backward = std::move(*backward);
    planned.row_axis = FollowRows(planned.forward, 0, nullptr);
    planned.mt_slice_shapes = shapes.slice_shapes;
    planned.num_slices = 1;
    for (int64_t c : shapes.counts) planned.num_slices *= c;

    for (size_t i = 0; i < rule.mt_outputs.size(); ++i) {
      const TensorDecl& out = rule.mt_outputs[i];
      const orbax::ItemReader::ArrayEntry& array = *arrays[i];
      const std::string name = array.leaf->name();
      if (array.metadata.shape != out.dims) {
        return InvalidArgument(item + ": array '" + name + "' has shape " +
                               ShapeString(array.metadata.shape) + " but " +
                               std::string(plugin_label) + " expects " + ShapeString(out.dims) +
                               " (a checkpoint of another model size, or scanned vs unscanned?)");
      }
      if (!IsFloating(array.metadata.dtype)) {
        return InvalidArgument(item + ": array '" + name + "' has dtype " +
                               std::string(ZarrName(array.metadata.dtype)) +
                               " but floating-point weights are expected");
      }
      auto [it, inserted] = mt_index.emplace(name, plan.mt_tensors.size());
      if (inserted) {
        MtTensor mt;
        mt.name = name;
        mt.shape = array.metadata.shape;
        mt.dtype = array.metadata.dtype;
        mt.chunk_shape = array.metadata.chunk_shape;
        mt.axis_meanings = out.axis_meanings;
        mt.stack_axes = shapes.stacked[i];
        plan.read_bytes +=
            static_cast<uint64_t>(NumElementsUnchecked(mt.shape)) * DTypeSize(mt.dtype);
        plan.mt_tensors.push_back(std::move(mt));
      }
      planned.mt_tensors.push_back(it->second);
    }

    const DType stored = plan.mt_tensors[planned.mt_tensors[0]].dtype;
    const DType out_dtype = rule.keep_f32() ? KeepF32ExportDType(stored, options.save_dtype)
                                            : options.save_dtype.value_or(stored);
    if (!WritableFromF32(out_dtype)) {
      return InvalidArgument("--save-dtype source: " + label + " would write " +
                             std::string(ZarrName(out_dtype)) +
                             ", which ckptbridge cannot write; choose bfloat16 or float32");
    }
    const size_t rule_index = plan.rules.size();
    Status status = ForEachSlice(shapes.counts, [&](const std::vector<int64_t>& slice) {
      Unit unit;
      unit.rule = rule_index;
      unit.slice = slice;
      if (shapes.leading >= 0) unit.hf_leading_index = slice[static_cast<size_t>(shapes.leading)];
      for (const TensorDecl& in : rule.hf_inputs) {
        std::string name = ResolveTemplate(in.name, rule, slice);
        const uint64_t bytes =
            static_cast<uint64_t>(NumElementsUnchecked(in.dims)) * DTypeSize(out_dtype);
        // The slices of a leading stack axis are parts of one HF tensor:
        // the first one registers it, the others write into it.
        if (unit.hf_leading_index > 0) {
          const auto it = hf_parts.find(name);
          if (it == hf_parts.end()) return Internal(label + ": lost HF tensor '" + name + "'");
          unit.hf_tensors.push_back(it->second);
          unit.bytes += bytes / static_cast<uint64_t>(in.dims[0]);
          continue;
        }
        if (!hf_names.insert(name).second) {
          return InvalidArgument(label + ": HF tensor '" + name + "' is produced twice");
        }
        if (unit.hf_leading_index == 0) hf_parts[name] = plan.hf_tensors.size();
        unit.hf_tensors.push_back(plan.hf_tensors.size());
        plan.write_bytes += bytes;
        unit.bytes +=
            unit.hf_leading_index == 0 ? bytes / static_cast<uint64_t>(in.dims[0]) : bytes;
        plan.hf_tensors.push_back({std::move(name), in.dims, out_dtype, ""});
      }
      plan.units.push_back(std::move(unit));
      return Status::Ok();
    });
    CKB_RETURN_IF_ERROR(status);
    plan.rules.push_back(std::move(planned));
  }

  if (!missing.empty()) {
    return NotFound(item + " lacks " + std::to_string(missing.size()) + " parameter" +
                    (missing.size() == 1 ? "" : "s") + " that " + std::string(plugin_label) +
                    " needs: " + ListNames(missing) +
                    " (is the checkpoint scanned as --scan-layers says, and of this model?)");
  }

  std::vector<std::string> unmapped;
  for (const auto& [path, array] : tree.params()) {
    if (mt_index.count(array->leaf->name())) continue;
    if (const IgnoreRule* ignore = FindIgnore(rules, CKB_SIDE_MAXTEXT, path)) {
      AddIgnored(plan.ignored, ignore->reason, array->leaf->name());
    } else {
      unmapped.push_back(array->leaf->name());
    }
  }
  for (const std::string& name : tree.training_state()) {
    // The step counter is expected; optimizer state is worth a note, since
    // it is dropped.
    if (name != "step") AddIgnored(plan.ignored, "training state, not a model parameter", name);
  }
  if (!unmapped.empty()) {
    return InvalidArgument(item + " has " + std::to_string(unmapped.size()) + " array" +
                           (unmapped.size() == 1 ? "" : "s") + " that " +
                           std::string(plugin_label) + " does not map: " + ListNames(unmapped) +
                           " (a different model family, or scanned vs unscanned?)");
  }
  CutLargeUnits(plan, options.max_unit_memory);
  return plan;
}

}  // namespace ckptbridge::engine
