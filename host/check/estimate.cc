#include "host/check/estimate.h"

#include <algorithm>
#include <functional>
#include <thread>

#include "host/formats/safetensors/writer.h"

namespace ckptbridge::check {
namespace {

uint64_t Elements(const Shape& shape) { return static_cast<uint64_t>(NumElementsUnchecked(shape)); }

// f32 copies a chain makes beyond its inputs: ops that build a new tensor.
uint64_t CopyingSteps(const engine::Chain& chain) {
  uint64_t n = 0;
  for (const engine::ChainStep& step : chain.steps) {
    switch (step.op.kind) {
      case OpKind::kTranspose:
      case OpKind::kInterleave:
      case OpKind::kDeinterleave:
      case OpKind::kPad:
      case OpKind::kTruncate:
      case OpKind::kConcat:
      case OpKind::kSplit:
      case OpKind::kCustom:
        ++n;
        break;
      default:
        break;
    }
  }
  return n;
}

// Memory of one unit (see estimate.h).
uint64_t UnitMemory(const engine::Plan& plan, const engine::Unit& unit) {
  const engine::PlannedRule& rule = plan.rules[unit.rule];
  uint64_t source = 0, f32 = 0, narrowed = 0;
  const bool to_maxtext = plan.direction == engine::Direction::kToMaxText;
  for (size_t idx : unit.hf_tensors) {
    const engine::HfTensor& hf = plan.hf_tensors[idx];
    const uint64_t n = Elements(hf.shape);
    if (to_maxtext) {
      source += n * DTypeSize(hf.dtype);
    } else {
      narrowed += n * DTypeSize(hf.dtype);
    }
    f32 = std::max(f32, n * 4);
  }
  uint64_t f32_total = 0;
  for (size_t i = 0; i < rule.mt_tensors.size(); ++i) {
    const engine::MtTensor& mt = plan.mt_tensors[rule.mt_tensors[i]];
    const uint64_t n = Elements(rule.mt_slice_shapes[i]);
    f32_total += n * 4;
    if (to_maxtext) {
      narrowed += n * DTypeSize(mt.dtype);
    } else {
      // The region read, plus the one decoded chunk each reader caches.
      source += n * DTypeSize(mt.dtype) + Elements(mt.chunk_shape) * DTypeSize(mt.dtype);
    }
  }
  // Inputs and outputs are each about the slice size in f32; the working set
  // holds the inputs, one copy per copying op (freed as the chain goes, so at
  // most two at a time) and the narrowed bytes.
  const uint64_t working = std::max(f32, f32_total);
  const uint64_t copies = std::min<uint64_t>(CopyingSteps(rule.forward), 1);
  return source + working * (1 + copies) + narrowed;
}

}  // namespace

uint64_t PeakMemory(const std::vector<uint64_t>& unit_memory, int threads) {
  uint64_t peak = kBaseMemoryBytes;
  for (size_t i = 0; i < unit_memory.size() && i < static_cast<size_t>(std::max(threads, 1)); ++i) {
    peak += unit_memory[i];
  }
  return peak;
}

int ThreadsThatFit(const std::vector<uint64_t>& unit_memory, int max_threads, uint64_t budget) {
  int best = 0;
  for (int t = 1; t <= max_threads; ++t) {
    if (PeakMemory(unit_memory, t) > budget) break;
    best = t;
  }
  return best;
}

Result<PlanEstimate> Estimate(const engine::Plan& plan, int threads, uint64_t max_shard_bytes) {
  PlanEstimate e;
  e.read_bytes = plan.read_bytes;
  e.write_bytes = plan.write_bytes;
  e.units = plan.units.size();
  e.threads =
      threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (const engine::Unit& unit : plan.units) e.unit_memory.push_back(UnitMemory(plan, unit));
  std::sort(e.unit_memory.begin(), e.unit_memory.end(), std::greater<>());
  e.peak_memory = PeakMemory(e.unit_memory, e.threads);

  if (plan.direction == engine::Direction::kToHf) {
    std::vector<safetensors::TensorSpec> specs;
    for (const engine::HfTensor& hf : plan.hf_tensors)
      specs.push_back({hf.name, hf.dtype, hf.shape});
    CKB_ASSIGN_OR_RETURN(safetensors::ShardPlan shards,
                         safetensors::PlanShards(std::move(specs), max_shard_bytes));
    for (const safetensors::PlannedShard& s : shards.shards) {
      e.shards.push_back({s.file_name, s.tensors.size(), s.file_bytes});
      e.disk_bytes += s.file_bytes;
    }
    // config.json, the index and tokenizer files.
    e.disk_bytes += uint64_t{64} << 10;
  } else {
    // zarr metadata per array, _METADATA, OCDBT manifest and B+tree.
    e.disk_bytes = plan.write_bytes + plan.mt_tensors.size() * 2048 + (uint64_t{64} << 10);
  }
  return e;
}

MemoryFit FitMemory(const PlanEstimate& e, uint64_t budget) {
  MemoryFit fit;
  fit.fits = e.peak_memory <= budget;
  fit.threads = fit.fits ? e.threads : ThreadsThatFit(e.unit_memory, e.threads, budget);
  fit.peak = PeakMemory(e.unit_memory, std::max(fit.threads, 1));
  return fit;
}

DiskFit FitDisk(const PlanEstimate& e, uint64_t bf16_tensor_bytes, uint64_t available) {
  DiskFit fit;
  fit.fits = e.disk_bytes <= available;
  fit.bf16_bytes = e.disk_bytes - e.write_bytes + bf16_tensor_bytes;
  fit.bf16_fits = bf16_tensor_bytes < e.write_bytes && fit.bf16_bytes <= available;
  fit.shortfall = fit.fits ? 0 : e.disk_bytes - available;
  return fit;
}

}  // namespace ckptbridge::check
