// host/engine/execute.h - running a plan: read, transform, write, unit by unit.
//
// A unit is one slice of one rule (a layer, an expert, or a whole tensor).
// Units run in parallel on a TBB arena of `threads` threads; each one reads
// only the bytes it needs (safetensors tensors through a mapping of just
// those bytes, MaxText slices through the chunks that hold them), applies the
// rule's op chain in f32, rounds once to the output dtype and writes its
// piece straight to its place: a zarr chunk of its own (to MaxText) or its
// offset in a preallocated safetensors shard (to HF). No stacked tensor is
// ever built whole.
//
// Memory: every unit's working set (its inputs as stored and as f32, its
// outputs as f32 and as written, the chunks it encodes or decodes) is
// estimated before it starts and taken from a MemoryBudget of
// `max_memory` bytes (base/memory_budget.h); a unit waits until its share is
// free. Its large buffers are ScratchBuffers, which the budget keeps for the
// next units while it has room for them. So the buffers in flight and kept
// never exceed the budget, except for a unit that alone needs more
// than all of it: it runs by itself (a notice names it) and the peak is that
// unit's working set. Safetensors sources are read through mappings of just
// the bytes a unit reads (safetensors::File::ReadRange), unmapped when it is
// done, so neither the address space nor the resident set grows with the
// shards. Above the budget sit kFixedOverheadBytes (the program, its
// libraries and plugins, the helper threads, the plan and metadata, and the
// free memory glibc's malloc keeps for reuse) and kPerThreadOverheadBytes
// per thread (its stack, codec state). Both are address space, which is
// what `ulimit -v` (RLIMIT_AS) limits; the resident set stays below them
// (README.md, "Memory", has the measurements).
//
// The first error stops the run (units not yet started are skipped) and is
// returned; so is cancellation (Cancelled) when `cancel` becomes true.
#ifndef CKPTBRIDGE_HOST_ENGINE_EXECUTE_H_
#define CKPTBRIDGE_HOST_ENGINE_EXECUTE_H_

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "host/base/memory_budget.h"
#include "host/base/status.h"
#include "host/engine/cast_audit.h"
#include "host/engine/plan.h"
#include "host/formats/orbax/checkpoint.h"
#include "host/formats/safetensors/reader.h"
#include "host/formats/safetensors/writer.h"
#include "host/plugin/adapter.h"

namespace ckptbridge::engine {

// Counters a progress display can poll while a plan runs.
struct Progress {
  std::atomic<uint64_t> units_done{0};
  std::atomic<uint64_t> bytes_done{0};  // source bytes of finished units
  uint64_t units_total = 0;
  uint64_t bytes_total = 0;
};

struct ExecuteOptions {
  int threads = 0;  // 0: all cores
  // Bytes the units in flight may hold together (see above); 0: no limit.
  uint64_t max_memory = 0;
  // Told once about a unit that alone needs more than max_memory.
  std::function<void(const std::string&)> notice;
  Progress* progress = nullptr;               // optional
  const std::atomic<bool>* cancel = nullptr;  // optional
  const Adapter* adapter = nullptr;           // needed for rules with custom ops
  // Every rounding to a narrower dtype is measured into this audit, whose
  // policy decides whether an overflow to Inf is an error (cast_audit.h).
  // Null: not kept, and an overflow is an error.
  CastAudit* cast_audit = nullptr;
  // Resume (journal.h). `skip(i)`: unit i was finished by an interrupted
  // earlier run and what it wrote was verified and taken over; it is not run
  // and counts as done. `wrap(i, body)`: runs around every unit that does
  // run (it must call body() on the same thread and return its status), so
  // the journal can record what the unit wrote. `open_shard`: to HF, opens
  // the writer of one planned shard instead of ShardWriter::Create.
  std::function<bool(size_t)> skip;
  std::function<Status(size_t, const std::function<Status()>&)> wrap;
  std::function<Result<std::unique_ptr<safetensors::ShardWriter>>(const std::filesystem::path&,
                                                                  const safetensors::PlannedShard&)>
      open_shard;
};

// Runs body(i) for i in [0, count) on `options.threads` threads (TBB),
// stopping at the first error or when `options.cancel` becomes true
// (Cancelled). `bytes(i)` is unit i's share of the progress total;
// `memory(i)`, when given with options.max_memory, is its working set, taken
// from the budget while it runs. `prefetch(i + 1)`, when given, is called as
// unit i starts, so that the next unit's source bytes come from disk while
// this one computes: a thread works through neighbouring units in order
// (TBB splits the range in halves), and a read that waits on the disk with
// nothing else to do is what kept conversions from cold caches at 3-4x cp.
Status ForEachUnit(size_t count, const ExecuteOptions& options,
                   const std::function<uint64_t(size_t)>& bytes,
                   const std::function<Status(size_t)>& body,
                   const std::function<uint64_t(size_t)>& memory = {},
                   const std::function<void(size_t)>& prefetch = {});

// The estimated working set of one unit of `plan` (see above).
uint64_t UnitMemory(const Plan& plan, const Unit& unit);

// What a conversion needs beyond --max-memory, as address space: under
// `ulimit -v` of max_memory + kFixedOverheadBytes + threads *
// kPerThreadOverheadBytes a conversion completes (tests/cli/
// memory_limit_test.cc). The fixed part is the measured 32 MiB of the
// program, plugins, helper threads and metadata plus 64 MiB for the free
// memory glibc keeps at the top of its heap (its trim threshold grows with
// the buffers freed, to at most 64 MiB); one malloc arena is used (main.cc).
// Per thread: an 8 MiB stack and 8 MiB for codec contexts and small
// allocations outside the slice estimates.
inline constexpr uint64_t kFixedOverheadBytes = uint64_t{96} << 20;
inline constexpr uint64_t kPerThreadOverheadBytes = uint64_t{16} << 20;

// The default --max-memory: a quarter of the physical memory (at least
// 256 MiB), leaving the rest to the page cache that streams the data.
uint64_t DefaultMaxMemory();
// `max_memory` when set (> 0), else DefaultMaxMemory(): what --max-memory
// means when it is left out.
uint64_t MaxMemoryOrDefault(uint64_t max_memory);

// The largest working set one unit should have under a budget of
// `max_memory`: an eighth of it, so that several units fit side by side, and
// at least 64 KiB but at most kMaxUnitMemory. Planning cuts larger units into
// row blocks where their rule allows (plan.h, max_unit_memory); what cannot
// be cut (a custom transform, ops across rows) runs whole.
//
// The ceiling: a larger budget buys no speed, only memory new to the process
// for each larger slice, which the kernel must zero. On the reference machine
// a 1 GiB bf16 checkpoint took 1.44-2.22 s (peak 282-290 MiB) to MaxText with a 6 GiB
// budget's 750 MiB units and 1.32-1.49 s (127 MiB) with 128 MiB units, user
// time the same. Halving it again to 64 MiB kept the time (4 GB, alternated:
// to MaxText 4.9-5.5 s either way, to HF 8.4-9.3 s) and made peak memory
// flat: two threads that happen to hold the two largest slices at once (the
// vocabulary-sized row blocks, half the units of a small model) added up to
// 60 MiB at 128 MiB, so peaks to HF ranged 151-223 MiB over 0.5-4 GB, and
// 104-128 MiB at 64 MiB. At 32 MiB the smaller chunks cost time to HF. The
// ceiling also bounds the chunks of a to-MaxText output to some 10 MiB (a
// unit's working set is about six times its slice).
inline constexpr uint64_t kMaxUnitMemory = uint64_t{64} << 20;
uint64_t UnitMemoryLimit(uint64_t max_memory);

// Writes the box [origin, origin + extent) of MaxText tensor `mt`, given as
// `bytes` (C order, mt.dtype), as the whole chunks of mt.chunk_shape it
// covers. The box must be made of whole chunks (edge chunks are zero-padded).
Status WriteRegionChunks(orbax::CheckpointWriter& writer, const MtTensor& mt,
                         const std::vector<int64_t>& origin, const Shape& extent,
                         std::string_view bytes);

// Runs a to-MaxText plan, writing every MaxText tensor of `plan` through
// `writer` (arrays are declared here). The caller finishes the checkpoint.
Status WriteMaxText(const Plan& plan, const safetensors::Checkpoint& source,
                    orbax::CheckpointWriter& writer, const ExecuteOptions& options);

// Runs a to-HF plan, writing safetensors shards (and the index when there is
// more than one) into `dir`. `shard_metadata` goes into every shard's
// __metadata__ next to "format": "pt" (the receipt, receipt.h).
// `final_metadata`, when given, is called once every tensor is written and
// replaces `shard_metadata` in the headers and the index: metadata known only
// late (the receipt's source hashes, computed beside the conversion). Its
// values must serialise to the same length as those planned, since the
// tensors were placed after headers of that length (Internal otherwise).
Status WriteHf(
    const Plan& plan, const orbax::ItemReader& source, const std::filesystem::path& dir,
    uint64_t max_shard_bytes, const ExecuteOptions& options,
    const std::map<std::string, std::string>& shard_metadata = {},
    const std::function<Result<std::map<std::string, std::string>>()>& final_metadata = {});

}  // namespace ckptbridge::engine

#endif  // CKPTBRIDGE_HOST_ENGINE_EXECUTE_H_
