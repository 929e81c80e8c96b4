#include "host/check/estimate.h"

#include <algorithm>
#include <functional>
#include <thread>

#include "host/engine/execute.h"
#include "host/formats/safetensors/writer.h"

namespace ckptbridge::check {
namespace {}  // namespace

uint64_t PeakMemory(const std::vector<uint64_t>& unit_memory, int threads, uint64_t budget) {
  uint64_t in_flight = 0;
  for (size_t i = 0; i < unit_memory.size() && i < static_cast<size_t>(std::max(threads, 1)); ++i) {
    in_flight += unit_memory[i];
  }
  // The engine's budget holds the slices in flight below it, except a slice
  // that alone needs more: it runs by itself.
  if (budget > 0 && !unit_memory.empty()) {
    in_flight = std::min(in_flight, std::max(budget, unit_memory.front()));
  }
  return kBaseMemoryBytes + in_flight;
}

Result<PlanEstimate> Estimate(const engine::Plan& plan, int threads, uint64_t max_shard_bytes,
                              uint64_t max_memory) {
  PlanEstimate e;
  e.read_bytes = plan.read_bytes;
  e.write_bytes = plan.write_bytes;
  e.units = plan.units.size();
  e.threads =
      threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  e.max_memory = max_memory;
  for (const engine::Unit& unit : plan.units) {
    e.unit_memory.push_back(engine::UnitMemory(plan, unit));
  }
  std::sort(e.unit_memory.begin(), e.unit_memory.end(), std::greater<>());
  e.peak_memory = PeakMemory(e.unit_memory, e.threads, max_memory);

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
  fit.largest = e.unit_memory.empty() ? 0 : e.unit_memory.front();
  fit.fits = fit.largest <= budget;
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
