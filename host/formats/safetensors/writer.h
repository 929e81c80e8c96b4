// host/formats/safetensors/writer.h - writing sharded safetensors checkpoints
// the way Hugging Face tools expect them, one tensor at a time.
//
// The whole layout is planned before a byte is written (PlanShards), so each
// shard's header is final from the start and tensors can be written in any
// order, from any thread, straight to their offsets (ShardWriter). Nothing
// holds more than the tensor being written.
//
// Layout decisions (matching MaxText's exporter and the reference writer):
//   - tensors are assigned to shards in lexicographic name order; a new shard
//     starts when the next tensor would push the current one past
//     `max_shard_bytes` (a single larger tensor gets a shard of its own);
//   - one shard is named `model.safetensors` and has no index; several are
//     `model-00001-of-0000N.safetensors` ... with `model.safetensors.index.json`
//     ({"metadata": {"total_size": <tensor bytes>}, "weight_map": {...}});
//   - inside a shard, tensors are ordered by descending element size, then
//     name, and the header is padded with spaces so the data section starts
//     on an 8-byte boundary: every tensor is naturally aligned;
//   - `__metadata__` is {"format": "pt"} plus any extra entries given.
#ifndef CKPTBRIDGE_HOST_FORMATS_SAFETENSORS_WRITER_H_
#define CKPTBRIDGE_HOST_FORMATS_SAFETENSORS_WRITER_H_

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "host/base/dtype.h"
#include "host/base/file.h"
#include "host/base/shape.h"
#include "host/base/status.h"

namespace ckptbridge::safetensors {

inline constexpr uint64_t kDefaultMaxShardBytes = uint64_t{3} << 30;  // 3 GiB

struct TensorSpec {
  std::string name;
  DType dtype = DType::kInvalid;
  Shape shape;
};

struct PlannedTensor {
  TensorSpec spec;
  uint64_t begin = 0;  // relative to the data section
  uint64_t end = 0;
};

struct PlannedShard {
  std::string file_name;
  std::vector<PlannedTensor> tensors;  // in data order
  std::string header;                  // 8-byte length prefix + padded JSON
  uint64_t file_bytes = 0;             // header.size() + data bytes
};

struct ShardPlan {
  std::vector<PlannedShard> shards;
  uint64_t total_tensor_bytes = 0;
  // Where each tensor went: name -> (shard index, tensor index in shard).
  std::map<std::string, std::pair<size_t, size_t>> location;
};

// Plans the shards for `tensors` (names must be unique). `extra_metadata` is
// merged into __metadata__ next to "format": "pt".
Result<ShardPlan> PlanShards(std::vector<TensorSpec> tensors, uint64_t max_shard_bytes,
                             const std::map<std::string, std::string>& extra_metadata = {});

// Writes the tensors of one planned shard into `dir`. Create() writes the
// header and sizes the file; WriteTensor() may be called from several threads
// for different tensors; Finish() checks every tensor was written and closes.
// The writer keeps a reference to `shard`, which must outlive it. Misuse
// (wrong byte count, a tensor written twice or never) is an Internal error.
class ShardWriter {
 public:
  static Result<std::unique_ptr<ShardWriter>> Create(const std::filesystem::path& dir,
                                                     const PlannedShard& shard);
  // Resume (host/engine/journal.h): reopens the shard file that an
  // interrupted run of the same plan left in `dir` without discarding its
  // data (creating it when it is gone, resizing it to the planned size when
  // it is not), and rewrites the header. Nothing counts as written until it
  // is Adopt()ed.
  static Result<std::unique_ptr<ShardWriter>> Reopen(const std::filesystem::path& dir,
                                                     const PlannedShard& shard);

  // One successful write, as the observer sees it.
  struct Written {
    size_t tensor_index = 0;
    uint64_t offset = 0;       // within the tensor
    uint64_t file_offset = 0;  // within the shard file
    bool whole = false;        // WriteTensor (true) or WriteTensorPart
    std::string_view bytes;    // what was written; valid during the call
  };
  // Called after every successful write, on the writing thread (a resume
  // journal checksums and records it). Set it before the first write.
  void set_observer(std::function<void(const Written&)> observer) {
    observer_ = std::move(observer);
  }
  // Counts bytes [offset, offset + num_bytes) of a tensor as written, whole
  // or as a part as they were first written: an interrupted run wrote them
  // and they were verified since. Internal error on a range outside the
  // tensor or a tensor adopted or written twice.
  Status Adopt(size_t tensor_index, uint64_t offset, uint64_t num_bytes, bool whole);
  const PlannedShard& shard() const { return shard_; }

  // `data` must hold exactly the tensor's bytes (numel * dtype size).
  Status WriteTensor(size_t tensor_index, const void* data, size_t num_bytes);
  // Writes bytes [offset, offset + num_bytes) of a tensor, for tensors that
  // are produced in pieces (one expert of a fused expert tensor at a time).
  // Pieces may come from several threads; Finish() checks that they add up
  // to the whole tensor. A tensor is written whole or in parts, not both.
  Status WriteTensorPart(size_t tensor_index, uint64_t offset, const void* data, size_t num_bytes);
  // Overwrites the header with `header`, which must be exactly as long as the
  // planned one (a header whose metadata was only known late: the same
  // layout, other bytes of the same length). Internal error otherwise.
  Status RewriteHeader(const std::string& header);
  Status Finish();

 private:
  ShardWriter(const PlannedShard& shard, OutputFile file);
  Status WriteAt(uint64_t offset, const void* data, size_t num_bytes);
  Status CheckIndex(size_t tensor_index) const;
  const PlannedShard& shard_;
  OutputFile file_;
  std::mutex write_mutex_;  // one tensor write at a time (WriteAt)
  std::unique_ptr<std::atomic<bool>[]> written_;
  // Bytes written per tensor by WriteTensorPart (whole writes count too).
  std::unique_ptr<std::atomic<uint64_t>[]> bytes_written_;
  std::function<void(const Written&)> observer_;
  // Tells the observer about a part written by WriteTensorPart.
  void Observe(size_t tensor_index, uint64_t offset, const void* data, size_t num_bytes) const;
};

// Writes model.safetensors.index.json into `dir` (only meaningful with more
// than one shard).
Status WriteIndex(const std::filesystem::path& dir, const ShardPlan& plan);

// Convenience for tests and small outputs: plans and writes `tensors` (with
// their bytes, in the same order) into `dir` in one call.
struct TensorWithData {
  TensorSpec spec;
  std::string bytes;
};
Status WriteCheckpoint(const std::filesystem::path& dir, const std::vector<TensorWithData>& tensors,
                       uint64_t max_shard_bytes = kDefaultMaxShardBytes);

}  // namespace ckptbridge::safetensors

#endif  // CKPTBRIDGE_HOST_FORMATS_SAFETENSORS_WRITER_H_
