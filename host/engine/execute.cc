#include "host/engine/execute.h"

#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>

#include "host/base/box.h"
#include "host/base/numeric.h"
#include "host/formats/safetensors/writer.h"

namespace ckptbridge::engine {
namespace {

// Runs a plan's units through ForEachUnit, each holding its working set
// from the budget. A unit too large for the budget is named once. `prefetch`
// reads the next unit's source ahead (ForEachUnit).
Status RunUnits(const Plan& plan, const ExecuteOptions& options,
                const std::function<Status(const Unit&)>& body,
                const std::function<void(const Unit&)>& prefetch) {
  std::vector<uint64_t> memory(plan.units.size());
  size_t largest = 0;
  for (size_t i = 0; i < plan.units.size(); ++i) {
    memory[i] = UnitMemory(plan, plan.units[i]);
    if (memory[i] > memory[largest]) largest = i;
  }
  if (options.max_memory > 0 && !memory.empty() && memory[largest] > options.max_memory &&
      options.notice) {
    const Unit& unit = plan.units[largest];
    const PlannedRule& rule = plan.rules[unit.rule];
    const std::string name = rule.mt_tensors.empty()
                                 ? std::string("a tensor")
                                 : "'" + plan.mt_tensors[rule.mt_tensors[0]].name + "'";
    options.notice("one slice of " + name + " needs about " +
                   std::to_string(memory[largest] >> 20) + " MiB, more than --max-memory (" +
                   std::to_string(options.max_memory >> 20) +
                   " MiB): such slices run one at a time and the peak exceeds the budget");
  }
  return ForEachUnit(
      plan.units.size(), options, [&](size_t i) { return plan.units[i].bytes; },
      [&](size_t i) { return body(plan.units[i]); }, [&](size_t i) { return memory[i]; },
      [&](size_t i) { prefetch(plan.units[i]); });
}

Result<Tensor> Widen(DType dtype, const void* data, const Shape& shape) {
  Tensor t;
  t.shape = shape;
  t.data.resize(static_cast<size_t>(NumElementsUnchecked(shape)));
  CKB_RETURN_IF_ERROR(ToF32(dtype, data, t.data.data(), t.data.size()));
  return t;
}

// Rounds output tensor `name` (or one slice of it) to `dtype` into `bytes`,
// measuring the rounding in the same pass (cast_audit.h).
Status Narrow(DType dtype, const Tensor& t, const std::string& name, const ExecuteOptions& options,
              ScratchBuffer& bytes) {
  bytes.Resize(t.data.size() * DTypeSize(dtype));
  CastStats stats;
  CKB_RETURN_IF_ERROR(CastFromF32(dtype, t.data.data(), bytes.data(), t.data.size(), stats));
  if (stats.elements == 0) return Status::Ok();  // not a narrowing cast
  if (options.cast_audit) return options.cast_audit->Record(name, dtype, stats);
  return CastAudit().Record(name, dtype, stats);
}

uint64_t Elements(const Shape& shape) { return static_cast<uint64_t>(NumElementsUnchecked(shape)); }

// The bytes of `hf` that `unit` reads, mapped from the source.
Result<safetensors::TensorBytes> ReadHfPart(const safetensors::Checkpoint& source,
                                            const HfTensor& hf, const Unit& unit) {
  const safetensors::CheckpointTensor* t = source.Find(hf.source_name);
  if (!t) return Internal("tensor '" + hf.name + "' vanished from the source");
  const HfPart part = UnitHfPart(hf, unit);
  return t->file->ReadRange(*t->info, part.byte_offset, part.num_bytes);
}

// Whether `unit` can move the stored elements themselves, skipping the f32
// round trip (the common bf16 -> bf16 kernel, either direction): one tensor
// on each side, the same dtype, of a size RunLayoutChain moves, and a chain
// (`unit`'s, in the direction at hand) that only moves values.
bool MovesStoredElements(const Plan& plan, const Unit& unit, const Chain& chain) {
  const PlannedRule& rule = plan.rules[unit.rule];
  if (unit.hf_tensors.size() != 1 || rule.mt_tensors.size() != 1) return false;
  const DType from = plan.hf_tensors[unit.hf_tensors[0]].dtype;
  const DType to = plan.mt_tensors[rule.mt_tensors[0]].dtype;
  return from == to && (DTypeSize(from) == 2 || DTypeSize(from) == 4) && IsLayoutOnly(chain);
}

// Where a custom transform's inputs come from, to prefix the plugin's error
// (the plugin sees buffers, not names): "<file>: tensors 'w' and 'w_scale'",
// with each tensor's file when they differ, and the slice of a leading-axis
// unit ("expert 3 (index 3 of their first axis)"), within which the plugin
// counts its indices.
std::string CustomInputs(const Plan& plan, const Unit& unit,
                         const safetensors::Checkpoint& source) {
  std::vector<std::pair<std::string, std::string>> inputs;  // file, tensor
  bool one_file = true;
  for (size_t idx : unit.hf_tensors) {
    const HfTensor& hf = plan.hf_tensors[idx];
    const safetensors::CheckpointTensor* t = source.Find(hf.source_name);
    inputs.emplace_back(t ? t->file->path().string() : source.path().string(), hf.source_name);
    one_file &= inputs.back().first == inputs.front().first;
  }
  std::string text = one_file && !inputs.empty() ? inputs.front().first + ": " : "";
  text += inputs.size() == 1 ? "tensor " : "tensors ";
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (i > 0) text += i + 1 == inputs.size() ? " and " : ", ";
    text += "'" + inputs[i].second + "'";
    if (!one_file) text += " (" + inputs[i].first + ")";
  }
  if (unit.hf_leading_index >= 0) {
    const std::vector<StackAxis>& stack = plan.rules[unit.rule].rule.stack;
    const bool experts = std::any_of(stack.begin(), stack.end(), [](const StackAxis& s) {
      return s.hf_leading && s.meaning == CKB_AXIS_EXPERTS;
    });
    const std::string index = std::to_string(unit.hf_leading_index);
    text += std::string(experts ? ", expert " : ", layer ") + index + " (index " + index +
            " of their first axis)";
  }
  return text;
}

}  // namespace

uint64_t UnitMemory(const Plan& plan, const Unit& unit) {
  const PlannedRule& rule = plan.rules[unit.rule];
  uint64_t stored_in = 0, f32_in = 0, f32_out = 0, stored_out = 0, chunks = 0;
  for (size_t i = 0; i < rule.mt_tensors.size(); ++i) {
    const MtTensor& mt = plan.mt_tensors[rule.mt_tensors[i]];
    const uint64_t n =
        i < rule.mt_slice_shapes.size() ? Elements(UnitMtSliceShape(rule, unit, i)) : 0;
    const uint64_t stored = n * DTypeSize(mt.dtype);
    // To MaxText a chunk is copied out of the slice and encoded; to HF one
    // is decoded and cached next to its compressed value.
    chunks += 2 * Elements(mt.chunk_shape) * DTypeSize(mt.dtype);
    if (plan.direction == Direction::kToMaxText) {
      f32_out += 4 * n;
      stored_out += stored;
    } else {
      f32_in += 4 * n;
      stored_in += stored;
    }
  }
  for (size_t idx : unit.hf_tensors) {
    const HfTensor& hf = plan.hf_tensors[idx];
    const uint64_t n = Elements(UnitHfPart(hf, unit).shape);
    if (plan.direction == Direction::kToMaxText) {
      // Packed inputs (MXFP4) hold fewer elements than their outputs; their
      // stored bytes count as they are.
      f32_in += 4 * n;
      stored_in += n * DTypeSize(hf.dtype);
    } else {
      f32_out += 4 * n;
      stored_out += n * DTypeSize(hf.dtype);
    }
  }
  // An op replaces its input by its output, so at most two f32 sets live at
  // once: the larger side twice bounds it.
  return stored_in + 2 * std::max(f32_in, f32_out) + stored_out + chunks;
}

uint64_t DefaultMaxMemory() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  const uint64_t physical = pages > 0 && page_size > 0
                                ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size)
                                : uint64_t{4} << 30;
  return std::max<uint64_t>(physical / 4, uint64_t{256} << 20);
}

uint64_t MaxMemoryOrDefault(uint64_t max_memory) {
  return max_memory > 0 ? max_memory : DefaultMaxMemory();
}

uint64_t UnitMemoryLimit(uint64_t max_memory) {
  return std::clamp<uint64_t>(max_memory / 8, uint64_t{64} << 10, kMaxUnitMemory);
}

Status ForEachUnit(size_t count, const ExecuteOptions& options,
                   const std::function<uint64_t(size_t)>& bytes,
                   const std::function<Status(size_t)>& body,
                   const std::function<uint64_t(size_t)>& memory,
                   const std::function<void(size_t)>& prefetch) {
  std::mutex mutex;
  Status first_error;
  std::atomic<bool> failed{false};
  if (options.progress) {
    options.progress->units_total = count;
    uint64_t total = 0;
    for (size_t i = 0; i < count; ++i) total += bytes(i);
    options.progress->bytes_total = total;
  }
  const int threads =
      options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
  // A unit works in two or three large buffers: four per thread cover the
  // units in flight.
  std::shared_ptr<MemoryBudget> budget;
  if (options.max_memory > 0 && memory) {
    budget = std::make_shared<MemoryBudget>(options.max_memory,
                                            4 * static_cast<size_t>(std::max(1, threads)));
  }
  auto run = [&](size_t i) {
    return options.wrap ? options.wrap(i, [&] { return body(i); }) : body(i);
  };
  // A unit that throws must still give its share of the budget back, or the
  // units waiting for it wait forever. std::bad_alloc is how a process under
  // an address-space limit (ulimit -v) learns that it ran out.
  auto guarded = [&](size_t i) -> Status {
    try {
      return run(i);
    } catch (const std::bad_alloc&) {
      return ResourceExhausted(
          "out of memory: an allocation failed with --max-memory " +
          std::to_string(options.max_memory >> 20) + " MiB and " + std::to_string(threads) +
          " thread(s); the process's address-space limit (ulimit -v) must leave room for "
          "--max-memory plus the fixed overhead README.md states, or lower --max-memory");
    } catch (const std::exception& e) {
      return Internal(std::string("a slice failed with an unexpected exception: ") + e.what());
    }
  };
  tbb::task_arena arena(std::max(1, threads));
  arena.execute([&] {
    tbb::parallel_for(
        tbb::blocked_range<size_t>(0, count, 1),
        [&](const tbb::blocked_range<size_t>& range) {
          for (size_t i = range.begin(); i != range.end(); ++i) {
            if (failed.load()) return;
            if (prefetch && i + 1 < count) prefetch(i + 1);
            Status status;
            if (options.cancel && options.cancel->load()) {
              status = Cancelled("interrupted");
            } else if (options.skip && options.skip(i)) {
              status = Status::Ok();  // done by an interrupted earlier run
            } else if (budget) {
              const uint64_t held = budget->Acquire(memory(i));
              {
                // The unit's ScratchBuffers reuse those earlier units left.
                BudgetScope scope(budget);
                status = guarded(i);
              }
              budget->Release(held);
            } else {
              status = guarded(i);
            }
            if (!status.ok()) {
              std::lock_guard<std::mutex> lock(mutex);
              if (!failed.exchange(true)) first_error = status;
              return;
            }
            if (options.progress) {
              options.progress->units_done.fetch_add(1);
              options.progress->bytes_done.fetch_add(bytes(i));
            }
          }
        },
        tbb::simple_partitioner());
  });
  return first_error;
}

Status WriteRegionChunks(orbax::CheckpointWriter& writer, const MtTensor& mt,
                         const std::vector<int64_t>& origin, const Shape& extent,
                         std::string_view bytes) {
  const size_t rank = mt.shape.size();
  const size_t element = DTypeSize(mt.dtype);
  std::vector<int64_t> first(rank), count(rank);
  bool single = true;
  for (size_t i = 0; i < rank; ++i) {
    const int64_t c = mt.chunk_shape[i];
    if (origin[i] % c != 0 || (extent[i] % c != 0 && origin[i] + extent[i] != mt.shape[i])) {
      return Internal("slice of '" + mt.name + "' does not cover whole chunks of " +
                      ShapeString(mt.chunk_shape));
    }
    first[i] = origin[i] / c;
    count[i] = (extent[i] + c - 1) / c;
    single &= count[i] == 1 && extent[i] == c;
  }
  if (single) return writer.WriteChunk(mt.name, first, bytes);

  std::vector<int64_t> step(rank, 0);
  ScratchBuffer chunk(static_cast<size_t>(NumElementsUnchecked(mt.chunk_shape)) * element);
  for (;;) {
    std::vector<int64_t> index(rank), src_origin(rank);
    Shape box(rank);
    for (size_t i = 0; i < rank; ++i) {
      index[i] = first[i] + step[i];
      src_origin[i] = step[i] * mt.chunk_shape[i];
      box[i] = std::min(mt.chunk_shape[i], extent[i] - src_origin[i]);
    }
    // Edge chunks are stored full size; the part past the array is zero.
    std::memset(chunk.data(), 0, chunk.size());
    CopyBox(bytes.data(), extent, src_origin, chunk.data(), mt.chunk_shape,
            std::vector<int64_t>(rank, 0), box, element);
    CKB_RETURN_IF_ERROR(writer.WriteChunk(mt.name, index, chunk.view()));
    size_t d = rank;
    while (d > 0) {
      --d;
      if (++step[d] < count[d]) break;
      step[d] = 0;
      if (d == 0) return Status::Ok();
    }
    if (rank == 0) return Status::Ok();
  }
}

Status WriteMaxText(const Plan& plan, const safetensors::Checkpoint& source,
                    orbax::CheckpointWriter& writer, const ExecuteOptions& options) {
  if (plan.direction != Direction::kToMaxText) return Internal("not a to-MaxText plan");
  for (const MtTensor& mt : plan.mt_tensors) {
    std::vector<std::string> keys;
    size_t start = 0;
    for (size_t dot = mt.name.find('.'); dot != std::string::npos; dot = mt.name.find('.', start)) {
      keys.push_back(mt.name.substr(start, dot - start));
      start = dot + 1;
    }
    keys.push_back(mt.name.substr(start));
    CKB_RETURN_IF_ERROR(writer.AddArray(keys, mt.dtype, mt.shape, mt.chunk_shape).status());
  }

  auto convert = [&](const Unit& unit) -> Status {
    const PlannedRule& rule = plan.rules[unit.rule];
    CKB_ASSIGN_OR_RETURN(const Chain forward, UnitChain(rule, unit, Direction::kToMaxText));
    if (MovesStoredElements(plan, unit, forward)) {
      const HfTensor& hf = plan.hf_tensors[unit.hf_tensors[0]];
      const MtTensor& mt = plan.mt_tensors[rule.mt_tensors[0]];
      ScratchBuffer bytes;
      {
        // The first transpose reads the mapped source itself.
        CKB_ASSIGN_OR_RETURN(safetensors::TensorBytes in, ReadHfPart(source, hf, unit));
        CKB_RETURN_IF_ERROR(RunLayoutChain(
            forward, DTypeSize(mt.dtype),
            std::string_view(reinterpret_cast<const char*>(in.data()), in.size()), bytes));
      }
      std::vector<int64_t> origin;
      Shape extent;
      UnitMtRegion(rule, unit, mt.shape, origin, extent);
      return WriteRegionChunks(writer, mt, origin, extent, bytes.view());
    }
    std::vector<Tensor> tensors;
    size_t first_step = 0;
    if (!rule.forward.steps.empty() && rule.forward.steps[0].op.kind == OpKind::kCustom) {
      if (!options.adapter) return Internal("a custom op needs the plugin adapter");
      // The plugin gets its inputs in their source dtype, aligned to their
      // element size (safetensors data need not be), in host-owned memory.
      std::vector<TensorRef> inputs;
      std::vector<std::vector<uint64_t>> aligned;
      std::vector<Shape> shapes;
      for (size_t idx : unit.hf_tensors) {
        const HfTensor& hf = plan.hf_tensors[idx];
        CKB_ASSIGN_OR_RETURN(safetensors::TensorBytes bytes, ReadHfPart(source, hf, unit));
        aligned.emplace_back((bytes.size() + 7) / 8);
        std::memcpy(aligned.back().data(), bytes.data(), bytes.size());
        shapes.push_back(UnitHfPart(hf, unit).shape);
      }
      for (size_t i = 0; i < shapes.size(); ++i) {
        inputs.push_back({plan.hf_tensors[unit.hf_tensors[i]].dtype, shapes[i], aligned[i].data()});
      }
      Tensor out;
      out.shape = rule.forward.steps[0].out.at(0);
      out.data.resize(static_cast<size_t>(NumElementsUnchecked(out.shape)));
      const Status custom = options.adapter->ApplyCustom(
          rule.forward.steps[0].op.custom_id, inputs, {{DType::kF32, out.shape, out.data.data()}});
      if (!custom.ok()) return custom.WithContext(CustomInputs(plan, unit, source));
      tensors.push_back(std::move(out));
      first_step = 1;
    } else {
      for (size_t idx : unit.hf_tensors) {
        const HfTensor& hf = plan.hf_tensors[idx];
        CKB_ASSIGN_OR_RETURN(safetensors::TensorBytes bytes, ReadHfPart(source, hf, unit));
        CKB_ASSIGN_OR_RETURN(Tensor tensor,
                             Widen(hf.dtype, bytes.data(), UnitHfPart(hf, unit).shape));
        tensors.push_back(std::move(tensor));
      }
    }
    CKB_ASSIGN_OR_RETURN(std::vector<Tensor> outputs,
                         RunChain(forward, std::move(tensors), first_step));
    for (size_t i = 0; i < outputs.size(); ++i) {
      const MtTensor& mt = plan.mt_tensors[rule.mt_tensors[i]];
      std::vector<int64_t> origin;
      Shape extent;
      UnitMtRegion(rule, unit, mt.shape, origin, extent);
      ScratchBuffer bytes;
      CKB_RETURN_IF_ERROR(Narrow(mt.dtype, outputs[i], mt.name, options, bytes));
      outputs[i] = Tensor();  // release the f32 copy before writing
      CKB_RETURN_IF_ERROR(WriteRegionChunks(writer, mt, origin, extent, bytes.view()));
    }
    return Status::Ok();
  };
  auto prefetch = [&](const Unit& unit) {
    for (size_t idx : unit.hf_tensors) {
      const HfTensor& hf = plan.hf_tensors[idx];
      const safetensors::CheckpointTensor* t = source.Find(hf.source_name);
      if (!t) continue;
      const HfPart part = UnitHfPart(hf, unit);
      t->file->Prefetch(*t->info, part.byte_offset, part.num_bytes);
    }
  };
  return RunUnits(plan, options, convert, prefetch);
}

Status WriteHf(const Plan& plan, const orbax::ItemReader& source, const std::filesystem::path& dir,
               uint64_t max_shard_bytes, const ExecuteOptions& options,
               const std::map<std::string, std::string>& shard_metadata,
               const std::function<Result<std::map<std::string, std::string>>()>& final_metadata) {
  if (plan.direction != Direction::kToHf) return Internal("not a to-HF plan");
  std::vector<safetensors::TensorSpec> specs;
  for (const HfTensor& hf : plan.hf_tensors) specs.push_back({hf.name, hf.dtype, hf.shape});
  CKB_ASSIGN_OR_RETURN(safetensors::ShardPlan shards,
                       safetensors::PlanShards(specs, max_shard_bytes, shard_metadata));
  std::vector<std::unique_ptr<safetensors::ShardWriter>> writers;
  for (const safetensors::PlannedShard& shard : shards.shards) {
    CKB_ASSIGN_OR_RETURN(auto writer, options.open_shard
                                          ? options.open_shard(dir, shard)
                                          : safetensors::ShardWriter::Create(dir, shard));
    writers.push_back(std::move(writer));
  }
  std::vector<const orbax::ItemReader::ArrayEntry*> arrays;
  for (const MtTensor& mt : plan.mt_tensors) {
    const orbax::ItemReader::ArrayEntry* entry = source.Find(mt.name);
    if (!entry) return Internal("array '" + mt.name + "' vanished from the source");
    arrays.push_back(entry);
  }

  // The stored bytes of the unit's slice of its i-th MaxText array. A reader
  // per slice: the chunk it caches is freed with it, so memory does not grow
  // with the number of arrays.
  auto read_slice = [&](const Unit& unit, size_t i) -> Result<ScratchBuffer> {
    const PlannedRule& rule = plan.rules[unit.rule];
    const MtTensor& mt = plan.mt_tensors[rule.mt_tensors[i]];
    std::vector<int64_t> origin;
    Shape extent;
    UnitMtRegion(rule, unit, mt.shape, origin, extent);
    // ReadRegion writes every byte of the region.
    ScratchBuffer bytes(static_cast<size_t>(NumElementsUnchecked(extent)) * DTypeSize(mt.dtype));
    CKB_RETURN_IF_ERROR(
        source.Reader(*arrays[rule.mt_tensors[i]])->ReadRegion(origin, extent, bytes.data()));
    return bytes;
  };
  // Writes the unit's part of `hf` (all of it unless the unit is a row block
  // or one expert).
  auto write_slice = [&](const Unit& unit, const HfTensor& hf, const ScratchBuffer& bytes) {
    const auto [shard, index] = shards.location.at(hf.name);
    if (!unit.partial()) return writers[shard]->WriteTensor(index, bytes.data(), bytes.size());
    const HfPart part = UnitHfPart(hf, unit);
    return writers[shard]->WriteTensorPart(index, part.byte_offset, bytes.data(), bytes.size());
  };
  auto convert = [&](const Unit& unit) -> Status {
    const PlannedRule& rule = plan.rules[unit.rule];
    CKB_ASSIGN_OR_RETURN(const Chain backward, UnitChain(rule, unit, Direction::kToHf));
    if (MovesStoredElements(plan, unit, backward)) {
      const HfTensor& hf = plan.hf_tensors[unit.hf_tensors[0]];
      CKB_ASSIGN_OR_RETURN(ScratchBuffer bytes, read_slice(unit, 0));
      CKB_RETURN_IF_ERROR(RunLayoutChain(backward, DTypeSize(hf.dtype), bytes));
      return write_slice(unit, hf, bytes);
    }
    std::vector<Tensor> tensors;
    for (size_t i = 0; i < rule.mt_tensors.size(); ++i) {
      CKB_ASSIGN_OR_RETURN(const ScratchBuffer bytes, read_slice(unit, i));
      CKB_ASSIGN_OR_RETURN(Tensor t, Widen(plan.mt_tensors[rule.mt_tensors[i]].dtype, bytes.data(),
                                           UnitMtSliceShape(rule, unit, i)));
      tensors.push_back(std::move(t));
    }
    CKB_ASSIGN_OR_RETURN(std::vector<Tensor> outputs, RunChain(backward, std::move(tensors)));
    for (size_t j = 0; j < outputs.size(); ++j) {
      const HfTensor& hf = plan.hf_tensors[unit.hf_tensors[j]];
      ScratchBuffer bytes;
      CKB_RETURN_IF_ERROR(Narrow(hf.dtype, outputs[j], hf.name, options, bytes));
      outputs[j] = Tensor();  // release the f32 copy before writing
      CKB_RETURN_IF_ERROR(write_slice(unit, hf, bytes));
    }
    return Status::Ok();
  };
  auto prefetch = [&](const Unit& unit) {
    const PlannedRule& rule = plan.rules[unit.rule];
    for (size_t i = 0; i < rule.mt_tensors.size(); ++i) {
      const MtTensor& mt = plan.mt_tensors[rule.mt_tensors[i]];
      std::vector<int64_t> origin;
      Shape extent;
      UnitMtRegion(rule, unit, mt.shape, origin, extent);
      source.Reader(*arrays[rule.mt_tensors[i]])->Prefetch(origin, extent);
    }
  };
  CKB_RETURN_IF_ERROR(RunUnits(plan, options, convert, prefetch));

  // The writers refer to the shards as planned; the index lists the final ones.
  std::optional<safetensors::ShardPlan> final_shards;
  if (final_metadata) {
    CKB_ASSIGN_OR_RETURN(const auto metadata, final_metadata());
    CKB_ASSIGN_OR_RETURN(final_shards,
                         safetensors::PlanShards(std::move(specs), max_shard_bytes, metadata));
    if (final_shards->shards.size() != shards.shards.size()) {
      return Internal("the final shard metadata changes the number of shards");
    }
    for (size_t i = 0; i < writers.size(); ++i) {
      CKB_RETURN_IF_ERROR(writers[i]->RewriteHeader(final_shards->shards[i].header));
    }
  }
  for (auto& writer : writers) CKB_RETURN_IF_ERROR(writer->Finish());
  if (shards.shards.size() > 1) {
    CKB_RETURN_IF_ERROR(safetensors::WriteIndex(dir, final_shards ? *final_shards : shards));
  }
  return Status::Ok();
}

}  // namespace ckptbridge::engine
