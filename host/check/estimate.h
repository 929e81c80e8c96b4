// host/check/estimate.h - what a plan will cost: bytes, shards, memory, disk.
//
// From a plan alone (headers and metadata) this predicts:
//
//   memory   per slice, the engine's own working-set estimate
//            (engine::UnitMemory: inputs as stored and as f32, outputs as f32
//            and as written, the chunks encoded or decoded). Slices run
//            `threads` at a time within the --max-memory budget, which only a
//            slice that alone needs more exceeds (it then runs by itself). The
//            peak is a fixed base for the process plus the slices in flight.
//   disk     the output's tensor bytes (uncompressed: an upper bound for
//            Orbax, which may compress chunks) plus headers and metadata. The
//            output is staged next to the destination and renamed into place,
//            so no other scratch space is used; with --overwrite the old
//            destination stays until the end.
#ifndef CKPTBRIDGE_HOST_CHECK_ESTIMATE_H_
#define CKPTBRIDGE_HOST_CHECK_ESTIMATE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "host/base/status.h"
#include "host/engine/plan.h"

namespace ckptbridge::check {

// Memory not tied to a slice: the binary, its plugins, metadata.
inline constexpr uint64_t kBaseMemoryBytes = uint64_t{16} << 20;

struct PlannedShardFile {
  std::string file_name;
  size_t tensors = 0;
  uint64_t bytes = 0;  // file size
};

struct PlanEstimate {
  uint64_t read_bytes = 0;
  uint64_t write_bytes = 0;
  size_t units = 0;
  int threads = 1;
  uint64_t max_memory = 0;  // the budget (0: none)
  // Working set of each slice, largest first.
  std::vector<uint64_t> unit_memory;
  uint64_t peak_memory = 0;  // base + the slices in flight
  // To HF: the safetensors shards the output will have (empty to MaxText).
  std::vector<PlannedShardFile> shards;
  uint64_t disk_bytes = 0;  // what the output occupies, at most
};

// Estimates `plan` run on `threads` threads (0: every core) within a memory
// budget of `max_memory` bytes (0: none), writing HF shards of at most
// `max_shard_bytes`.
Result<PlanEstimate> Estimate(const engine::Plan& plan, int threads, uint64_t max_shard_bytes,
                              uint64_t max_memory);

// Peak memory with `threads` threads and a budget (0: none); `unit_memory`
// sorted largest first.
uint64_t PeakMemory(const std::vector<uint64_t>& unit_memory, int threads, uint64_t budget);

// Whether a budget of `budget` bytes holds every slice: a smaller budget is
// exceeded by the largest slice, which runs alone. `largest` is the least
// --max-memory that holds.
struct MemoryFit {
  bool fits = true;
  uint64_t largest = 0;
};
MemoryFit FitMemory(const PlanEstimate& estimate, uint64_t budget);

// Whether the output fits in `available` bytes of disk; when not, whether
// --save-dtype bfloat16 would (`bf16_tensor_bytes`: the tensors written as
// bfloat16) and how much more space is needed otherwise.
struct DiskFit {
  bool fits = true;
  bool bf16_fits = false;
  uint64_t bf16_bytes = 0;
  uint64_t shortfall = 0;
};
DiskFit FitDisk(const PlanEstimate& estimate, uint64_t bf16_tensor_bytes, uint64_t available);

}  // namespace ckptbridge::check

#endif  // CKPTBRIDGE_HOST_CHECK_ESTIMATE_H_
