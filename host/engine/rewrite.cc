#include "host/engine/rewrite.h"

#include <cstring>
#include <map>
#include <set>

#include "host/base/file.h"
#include "host/base/version.h"
#include "host/engine/execute.h"
#include "host/engine/plan.h"
#include "host/engine/receipt.h"
#include "host/engine/staging.h"
#include "host/plugin/adapter.h"

namespace ckptbridge::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// One piece of work: a box of a source array becomes a box of an output
// array with the same elements in the same order (the shapes may differ by
// axes of size 1: the stacked axes of either layout).
struct Move {
  size_t output = 0;  // index into the output tensors
  std::vector<int64_t> dst_origin;
  Shape dst_extent;
  const orbax::ItemReader::ArrayEntry* source = nullptr;
  std::vector<int64_t> src_origin;
  Shape src_extent;
  uint64_t bytes = 0;
};

struct RewritePlan {
  std::vector<MtTensor> outputs;
  std::vector<Move> moves;
  std::vector<IgnoredGroup> ignored;
  uint64_t bytes = 0;
};

void Note(const ConvertObserver& observer, const std::string& line) {
  if (observer.notice) observer.notice(line);
}

std::vector<std::string> SplitKeys(const std::string& dotted) {
  std::vector<std::string> keys;
  size_t start = 0;
  for (size_t dot = dotted.find('.'); dot != std::string::npos; dot = dotted.find('.', start)) {
    keys.push_back(dotted.substr(start, dot - start));
    start = dot + 1;
  }
  keys.push_back(dotted.substr(start));
  return keys;
}

uint64_t BoxBytes(const Shape& extent, DType dtype) {
  return static_cast<uint64_t>(NumElementsUnchecked(extent)) * DTypeSize(dtype);
}

void AddTrainingState(const MaxTextTree& tree, RewritePlan& plan) {
  IgnoredGroup group{"training state, not a model parameter", {}};
  for (const std::string& name : tree.training_state()) {
    if (name != "step") group.names.push_back(name);
  }
  if (!group.names.empty()) plan.ignored.push_back(std::move(group));
}

// Every parameter copied chunk by chunk, layout unchanged.
RewritePlan PlanCopy(const MaxTextTree& tree) {
  RewritePlan plan;
  for (const auto& [path, array] : tree.params()) {
    const orbax::ArrayMetadata& md = array->metadata;
    MtTensor out;
    out.name = OrbaxName(path);
    out.shape = md.shape;
    out.dtype = md.dtype;
    out.chunk_shape = md.chunk_shape;
    const size_t output = plan.outputs.size();
    plan.outputs.push_back(out);
    const std::vector<int64_t> grid = md.ChunkGrid();
    int64_t chunks = 1;
    for (int64_t g : grid) chunks *= g;
    for (int64_t c = 0; c < chunks; ++c) {
      Move move;
      move.output = output;
      move.source = array;
      move.src_origin.assign(grid.size(), 0);
      move.src_extent.assign(grid.size(), 0);
      int64_t rest = c;  // chunk c in row-major order of the grid
      for (size_t d = grid.size(); d-- > 0;) {
        const int64_t origin = (rest % grid[d]) * md.chunk_shape[d];
        rest /= grid[d];
        move.src_origin[d] = origin;
        move.src_extent[d] = std::min(md.chunk_shape[d], md.shape[d] - origin);
      }
      move.dst_origin = move.src_origin;
      move.dst_extent = move.src_extent;
      move.bytes = BoxBytes(move.src_extent, md.dtype);
      plan.bytes += move.bytes;
      plan.moves.push_back(std::move(move));
    }
  }
  AddTrainingState(tree, plan);
  return plan;
}

// The slices of a rule, and where each sits in each of its MaxText tensors.
struct RuleSlices {
  std::vector<std::vector<int64_t>> slices;
  std::vector<std::string> keys;  // the HF tensors of each slice, joined
};

RuleSlices EnumerateSlices(const Rule& rule) {
  RuleSlices out;
  std::vector<int64_t> counts;
  for (const StackAxis& s : rule.stack) counts.push_back(s.count);
  std::vector<int64_t> slice(counts.size(), 0);
  for (;;) {
    std::string key;
    for (const TensorDecl& in : rule.hf_inputs) key += ResolveTemplate(in.name, rule, slice) + "\n";
    // Slices along the HF tensors' leading axis share their names; the
    // index tells them apart (after the first name, which is cut out below).
    for (size_t k = 0; k < rule.stack.size(); ++k) {
      if (rule.stack[k].hf_leading) key += "[" + std::to_string(slice[k]) + "]\n";
    }
    out.slices.push_back(slice);
    out.keys.push_back(std::move(key));
    size_t d = counts.size();
    bool done = counts.empty();
    while (d > 0) {
      --d;
      if (++slice[d] < counts[d]) break;
      slice[d] = 0;
      if (d == 0) done = true;
    }
    if (done) break;
  }
  return out;
}

void Region(const Rule& rule, const std::vector<int64_t>& slice, const Shape& dims,
            std::vector<int64_t>& origin, Shape& extent) {
  origin.assign(dims.size(), 0);
  extent = dims;
  for (size_t k = 0; k < rule.stack.size(); ++k) {
    origin[rule.stack[k].mt_axis] = slice[k];
    extent[rule.stack[k].mt_axis] = 1;
  }
}

bool SameOps(const std::vector<OpSpec>& a, const std::vector<OpSpec>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].kind != b[i].kind || a[i].axis != b[i].axis || a[i].custom_id != b[i].custom_id ||
        a[i].values != b[i].values || a[i].factor != b[i].factor ||
        a[i].inverse_factor != b[i].inverse_factor || a[i].size != b[i].size) {
      return false;
    }
  }
  return true;
}

// Slices of the source layout matched to the target layout by the HF
// tensors they are made of.
Result<RewritePlan> PlanRestack(const RuleSet& from, const RuleSet& to, const MaxTextTree& tree,
                                const std::string& item, const std::string& label) {
  RewritePlan plan;
  struct SourceSlice {
    const Rule* rule;
    std::vector<int64_t> slice;
    std::vector<const orbax::ItemReader::ArrayEntry*> arrays;
  };
  std::map<std::string, SourceSlice> by_key;
  std::set<const orbax::ItemReader::ArrayEntry*> consumed;
  std::vector<std::string> missing;
  for (const Rule& rule : from.rules) {
    std::vector<const orbax::ItemReader::ArrayEntry*> arrays;
    size_t found = 0;
    for (const TensorDecl& out : rule.mt_outputs) {
      arrays.push_back(tree.Find(out.name));
      found += arrays.back() != nullptr;
    }
    if (found == 0 && rule.optional()) continue;
    for (size_t i = 0; i < arrays.size(); ++i) {
      if (!arrays[i]) {
        missing.push_back(rule.mt_outputs[i].name);
      } else if (arrays[i]->metadata.shape != rule.mt_outputs[i].dims) {
        return InvalidArgument(item + ": array '" + arrays[i]->leaf->name() + "' has shape " +
                               ShapeString(arrays[i]->metadata.shape) + " but " + label +
                               " expects " + ShapeString(rule.mt_outputs[i].dims) +
                               " (is the checkpoint scanned as recorded?)");
      }
    }
    if (found < arrays.size()) continue;
    RuleSlices slices = EnumerateSlices(rule);
    for (size_t i = 0; i < slices.slices.size(); ++i) {
      by_key[slices.keys[i]] = SourceSlice{&rule, slices.slices[i], arrays};
    }
  }
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 12; ++i) list += (i ? ", " : "") + missing[i];
    return NotFound(item + " lacks " + std::to_string(missing.size()) + " parameter" +
                    (missing.size() == 1 ? "" : "s") + " that " + label + " needs: " + list);
  }

  for (const Rule& rule : to.rules) {
    RuleSlices slices = EnumerateSlices(rule);
    std::vector<const SourceSlice*> sources;
    for (const std::string& key : slices.keys) {
      auto it = by_key.find(key);
      sources.push_back(it == by_key.end() ? nullptr : &it->second);
    }
    const bool none = std::all_of(sources.begin(), sources.end(), [](auto* s) { return !s; });
    if (none && rule.optional()) continue;
    std::vector<size_t> outputs;
    for (size_t i = 0; i < rule.mt_outputs.size(); ++i) {
      MtTensor out;
      out.name = OrbaxName(rule.mt_outputs[i].name);
      out.shape = rule.mt_outputs[i].dims;
      for (const StackAxis& s : rule.stack) out.stack_axes.push_back(s.mt_axis);
      outputs.push_back(plan.outputs.size());
      plan.outputs.push_back(std::move(out));
    }
    for (size_t k = 0; k < slices.slices.size(); ++k) {
      const SourceSlice* src = sources[k];
      const std::string first = slices.keys[k].substr(0, slices.keys[k].find('\n'));
      if (!src) {
        return NotFound(item + ": no parameter holds the slice of '" + rule.mt_outputs[0].name +
                        "' made of HF tensor '" + first + "'");
      }
      if (!SameOps(src->rule->ops, rule.ops) ||
          src->rule->mt_outputs.size() != rule.mt_outputs.size()) {
        return Unsupported(label + ": '" + rule.mt_outputs[0].name + "' and '" +
                           src->rule->mt_outputs[0].name +
                           "' are built differently, so the slice made of '" + first +
                           "' cannot be moved between layouts; convert through HF instead");
      }
      for (size_t i = 0; i < rule.mt_outputs.size(); ++i) {
        MtTensor& out = plan.outputs[outputs[i]];
        const orbax::ItemReader::ArrayEntry* array = src->arrays[i];
        out.dtype = array->metadata.dtype;
        Move move;
        move.output = outputs[i];
        move.source = array;
        Region(rule, slices.slices[k], out.shape, move.dst_origin, move.dst_extent);
        Region(*src->rule, src->slice, array->metadata.shape, move.src_origin, move.src_extent);
        if (NumElementsUnchecked(move.src_extent) != NumElementsUnchecked(move.dst_extent)) {
          return Internal(label + ": slices of '" + out.name + "' and '" + array->leaf->name() +
                          "' differ in size");
        }
        move.bytes = BoxBytes(move.src_extent, array->metadata.dtype);
        plan.bytes += move.bytes;
        consumed.insert(array);
        plan.moves.push_back(std::move(move));
      }
    }
  }
  for (MtTensor& out : plan.outputs) {
    out.chunk_shape =
        ChooseChunkShape(out.shape, out.stack_axes, DTypeSize(out.dtype), uint64_t{2} << 30);
  }

  std::vector<std::string> unmapped;
  for (const auto& [path, array] : tree.params()) {
    if (consumed.count(array)) continue;
    bool ignored = false;
    for (const IgnoreRule& ignore : from.ignores) {
      if (ignore.side == CKB_SIDE_MAXTEXT && GlobMatch(ignore.pattern, path)) {
        plan.ignored.push_back({ignore.reason, {array->leaf->name()}});
        ignored = true;
        break;
      }
    }
    if (!ignored) unmapped.push_back(array->leaf->name());
  }
  if (!unmapped.empty()) {
    std::string list;
    for (size_t i = 0; i < unmapped.size() && i < 12; ++i) list += (i ? ", " : "") + unmapped[i];
    return InvalidArgument(item + " has " + std::to_string(unmapped.size()) + " parameters that " +
                           label + " does not map: " + list);
  }
  AddTrainingState(tree, plan);
  return plan;
}

// The step counter of the source (0 when it has none).
int64_t SourceStep(const orbax::ItemReader& item) {
  const orbax::ItemReader::ArrayEntry* step = item.Find("step");
  if (!step || !step->metadata.shape.empty()) return 0;
  const DType dtype = step->metadata.dtype;
  if (dtype != DType::kI64 && dtype != DType::kI32) return 0;
  char bytes[8] = {};
  if (!item.Reader(*step)->ReadRegion({}, {}, bytes).ok()) return 0;
  if (dtype == DType::kI32) {
    int32_t v;
    std::memcpy(&v, bytes, 4);
    return v;
  }
  int64_t v;
  std::memcpy(&v, bytes, 8);
  return v;
}

}  // namespace

Result<ConvertSummary> RewriteMaxText(const RewriteOptions& options, const PluginRegistry& plugins,
                                      const ConvertObserver& observer) {
  std::error_code ec;
  if (!fs::exists(options.source, ec)) {
    return NotFound(options.source.string() + ": no such file or directory");
  }
  CKB_ASSIGN_OR_RETURN(MaxTextSource source, OpenMaxTextSource(options.source));
  const std::string item = source.item->location().item_dir.string();
  const bool target_scan = options.scan_layers.value_or(source.scan);
  const bool restack = target_scan != source.scan;

  RewritePlan plan;
  ConvertSummary summary;
  json record = source.record ? *source.record : json::object();
  if (restack) {
    CKB_ASSIGN_OR_RETURN(ModelChoice model,
                         IdentifyModel(source, options.hf_config_file, options.model_name,
                                       options.family, plugins, observer));
    CKB_ASSIGN_OR_RETURN(std::unique_ptr<Adapter> adapter,
                         Adapter::Create(*model.plugin, model.model_type, model.hf_config.dump()));
    auto rules_for = [&](bool scan) {
      json o = options.plugin_options.is_object() ? options.plugin_options : json::object();
      o["direction"] = "to_maxtext";
      o["scan_layers"] = scan;
      return adapter->Rules(o.dump());
    };
    CKB_ASSIGN_OR_RETURN(RuleSet from, rules_for(source.scan));
    CKB_ASSIGN_OR_RETURN(RuleSet to, rules_for(target_scan));
    const std::string label = "plugin '" + model.plugin->name + "' " + model.plugin->version;
    CKB_ASSIGN_OR_RETURN(plan, PlanRestack(from, to, source.tree, item, label));
    summary.plugin = model.plugin->name + " " + model.plugin->version;
    summary.model_type = model.model_type;
    record["hf_config"] = model.hf_config;
    record["model_type"] = model.model_type;
    record["plugin"] = {{"name", model.plugin->name}, {"version", model.plugin->version}};
  } else {
    plan = PlanCopy(source.tree);
  }
  for (const IgnoredGroup& group : plan.ignored) {
    Note(observer, "skipped " + std::to_string(group.names.size()) + " tensor" +
                       (group.names.size() == 1 ? "" : "s") + " (" + group.reason +
                       "): " + group.names[0] + (group.names.size() > 1 ? ", ..." : ""));
  }
  if (observer.planned) {
    Plan view;  // what a progress display needs
    view.read_bytes = view.write_bytes = plan.bytes;
    view.mt_tensors = plan.outputs;
    view.units.resize(plan.moves.size());
    observer.planned(view);
  }

  CKB_ASSIGN_OR_RETURN(
      StagedOutput staged,
      StagedOutput::Begin(options.destination, options.overwrite, StagedOutput::Kind::kOrbax));
  orbax::WriteOptions storage = options.storage;
  storage.final_root = staged.destination();
  CKB_ASSIGN_OR_RETURN(std::unique_ptr<orbax::CheckpointWriter> writer,
                       orbax::CheckpointWriter::Create(staged.staging(), storage));
  for (const MtTensor& out : plan.outputs) {
    CKB_RETURN_IF_ERROR(
        writer->AddArray(SplitKeys(out.name), out.dtype, out.shape, out.chunk_shape).status());
  }
  ExecuteOptions exec;
  exec.threads = options.threads;
  exec.max_memory = MaxMemoryOrDefault(options.max_memory);
  exec.progress = observer.progress;
  exec.cancel = observer.cancel;
  CKB_RETURN_IF_ERROR(ForEachUnit(
      plan.moves.size(), exec, [&](size_t i) { return plan.moves[i].bytes; },
      [&](size_t i) -> Status {
        const Move& move = plan.moves[i];
        ScratchBuffer bytes(move.bytes);  // ReadRegion writes every byte
        CKB_RETURN_IF_ERROR(source.item->Reader(*move.source)
                                ->ReadRegion(move.src_origin, move.src_extent, bytes.data()));
        return WriteRegionChunks(*writer, plan.outputs[move.output], move.dst_origin,
                                 move.dst_extent, bytes.view());
      },
      // The slice, a chunk copied out of it and its encoding; the source
      // chunk decoded and cached.
      [&](size_t i) { return 4 * plan.moves[i].bytes; }));
  CKB_RETURN_IF_ERROR(writer->AddScalar({"step"}, SourceStep(*source.item)));
  CKB_RETURN_IF_ERROR(writer->AddEmptyDict({"opt_state"}));
  record["version"] = kVersion;
  record["rewritten_from"] = fs::absolute(options.source, ec).lexically_normal().string();
  // The receipt describes the conversion that wrote the source, not this
  // rewrite: kept for provenance, but not as this checkpoint's receipt.
  if (record.contains(kReceiptKey)) {
    record["source_receipt"] = std::move(record[kReceiptKey]);
    record.erase(kReceiptKey);
  }
  CKB_RETURN_IF_ERROR(writer->Finish({{"scan_layers", target_scan}, {kMetadataKey, record}}));
  writer.reset();
  CKB_RETURN_IF_ERROR(staged.Commit());

  summary.scan_layers = target_scan;
  summary.tensors_read = source.tree.params().size();
  summary.tensors_written = plan.outputs.size();
  summary.bytes_read = summary.bytes_written = plan.bytes;
  summary.destination = staged.destination();
  summary.bytes_on_disk = DirectoryBytes(summary.destination);
  return summary;
}

}  // namespace ckptbridge::engine
