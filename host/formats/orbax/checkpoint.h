// host/formats/orbax/checkpoint.h - Orbax PyTree checkpoints as MaxText
// writes and reads them.
//
// On disk (shared/docs/orbax-format.md §1):
//
//   <root>/0/_CHECKPOINT_METADATA      step metadata (JSON)
//   <root>/0/commit_success.txt
//   <root>/0/items/_METADATA           the tree: one entry per leaf
//   <root>/0/items/commit_success.txt
//   <root>/0/items/<param name>/...    zarr arrays (without OCDBT)
//
// MaxText's tree is {step, params: {params: {...weights...}}, opt_state: {}},
// so weights are named `params.params.decoder.layers...`.
//
// Reading accepts the checkpoint root (with one numeric step directory, or
// several: the highest is taken), a step directory (holding `items/`) or the
// item directory itself (holding `_METADATA`), which is what MaxText's
// `load_parameters_path` points at.
//
// Items are read and written with or without OCDBT (one database at the
// item directory, ocdbt.h) and with zarr v3 or v2 arrays (zarr.h): all four
// combinations. Reading follows the item's _METADATA (`use_ocdbt`, or when
// absent whether `manifest.ocdbt` exists; `use_zarr3`).
#ifndef CKPTBRIDGE_HOST_FORMATS_ORBAX_CHECKPOINT_H_
#define CKPTBRIDGE_HOST_FORMATS_ORBAX_CHECKPOINT_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "host/base/dtype.h"
#include "host/base/memory_budget.h"
#include "host/base/shape.h"
#include "host/base/status.h"
#include "host/formats/orbax/kvstore.h"
#include "host/formats/orbax/ocdbt.h"
#include "host/formats/orbax/zarr.h"

namespace ckptbridge::orbax {

// key_type values of _METADATA's key_metadata.
inline constexpr int kKeyTypeSequence = 1;
inline constexpr int kKeyTypeDict = 2;

struct LeafMetadata {
  std::vector<std::string> keys;  // the key path, e.g. {"params", "params", "decoder", ...}
  std::vector<int> key_types;     // kKeyTypeSequence / kKeyTypeDict, one per key
  std::string value_type;         // "jax.Array", "np.ndarray", "scalar", "Dict", ...
  bool skip_deserialize = false;
  std::optional<Shape> write_shape;

  // The parameter name: keys joined with '.'.
  std::string name() const;
  // True for leaves that hold array data (jax.Array, np.ndarray, scalar).
  bool is_array() const;
};

// The `_METADATA` file.
struct TreeMetadata {
  std::vector<LeafMetadata> leaves;  // sorted by name
  std::optional<bool> use_ocdbt;     // absent in older files
  bool use_zarr3 = false;            // absent means zarr v2
  bool store_array_data_equal_to_fill_value = false;
  nlohmann::json custom_metadata;  // null when absent

  static Result<TreeMetadata> Parse(std::string_view text, std::string_view label);
  // JSON as Orbax writes it: tree_metadata keyed by Python's str(tuple(keys)).
  std::string ToJson() const;
};

// Where an item was found.
struct ItemLocation {
  std::filesystem::path item_dir;  // holds _METADATA
  std::filesystem::path step_dir;  // empty for a bare item
  std::optional<int64_t> step;
};

// Resolves a root, step or item directory to the item directory. Errors say
// what was expected ("no _METADATA, items/_METADATA or numeric step directory
// in <path>") and refuse unfinished checkpoints (a path component containing
// ".orbax-checkpoint-tmp").
Result<ItemLocation> ResolveItem(const std::filesystem::path& path);

// Reads region boxes out of one stored array, decoding whole chunks.
class ArrayReader {
 public:
  // `fill_missing`: a chunk absent from the store reads as the fill value
  // (TensorStore's default); false makes it a DataLoss error, as Orbax reads
  // items whose _METADATA says store_array_data_equal_to_fill_value.
  ArrayReader(const KvStore* store, std::string name, ArrayMetadata metadata,
              bool fill_missing = true)
      : store_(store),
        name_(std::move(name)),
        metadata_(std::move(metadata)),
        fill_missing_(fill_missing) {}

  const std::string& name() const { return name_; }
  const ArrayMetadata& metadata() const { return metadata_; }

  // Copies the box [origin, origin + shape) into `out` (C order, the array's
  // dtype, NumElements(shape) * dtype size bytes). Thread-safe. Consecutive
  // calls that touch the same chunk decode it once (a small per-reader cache
  // holds the most recently decoded chunk).
  Status ReadRegion(const std::vector<int64_t>& origin, const Shape& shape, void* out) const;
  // Hints that ReadRegion(origin, shape) comes soon: the store reads the
  // chunks' bytes ahead (KvStore::Prefetch). An invalid region is ignored.
  void Prefetch(const std::vector<int64_t>& origin, const Shape& shape) const;

 private:
  // Reads and decodes stored chunk `index` into its ChunkBytes() at `out`;
  // the store's NotFound when it was never written.
  Status ReadStoredChunk(const std::vector<int64_t>& index, char* out) const;
  Result<std::shared_ptr<const ScratchBuffer>> Chunk(const std::vector<int64_t>& index) const;
  // The chunk indices a region touches, [first, last] on every axis, walked
  // in C order by Next (false past the last); nullopt for an empty region.
  // A region of the wrong rank or outside the array is InvalidArgument.
  struct ChunkSpan {
    std::vector<int64_t> first, last;
    bool Next(std::vector<int64_t>& index) const;
  };
  Result<std::optional<ChunkSpan>> Span(const std::vector<int64_t>& origin,
                                        const Shape& shape) const;

  const KvStore* store_;
  std::string name_;
  ArrayMetadata metadata_;
  bool fill_missing_;
  mutable std::mutex cache_mutex_;
  mutable std::vector<int64_t> cached_index_;
  mutable std::shared_ptr<const ScratchBuffer> cached_chunk_;
};

class ItemReader {
 public:
  // Opens the item at `path` (see ResolveItem) and reads _METADATA, the
  // step's _CHECKPOINT_METADATA and every array's zarr metadata. With OCDBT
  // the database is opened and its whole B+tree read (OcdbtReader); a
  // missing `manifest.ocdbt` is NotFound naming it (Orbax never falls back
  // to the per-process `ocdbt.process_N` databases, and neither do we).
  static Result<std::unique_ptr<ItemReader>> Open(const std::filesystem::path& path);

  const ItemLocation& location() const { return location_; }
  const TreeMetadata& tree() const { return tree_; }
  bool uses_ocdbt() const { return uses_ocdbt_; }
  bool uses_zarr3() const { return tree_.use_zarr3; }
  // The step directory's _CHECKPOINT_METADATA (null when absent).
  const nlohmann::json& checkpoint_metadata() const { return checkpoint_metadata_; }

  struct ArrayEntry {
    const LeafMetadata* leaf = nullptr;
    ArrayMetadata metadata;
  };
  // Every array leaf with its zarr metadata, sorted by name.
  const std::vector<ArrayEntry>& arrays() const { return arrays_; }
  const ArrayEntry* Find(std::string_view name) const;
  // A reader for one array (valid while the ItemReader lives).
  std::unique_ptr<ArrayReader> Reader(const ArrayEntry& entry) const;
  // Bytes the array occupies on disk: its directory without OCDBT, the sum
  // of its values (metadata and chunks) in the database with OCDBT.
  uint64_t StoredBytes(const ArrayEntry& entry) const;
  // The item's keys and values, whichever way they are stored.
  const KvStore& store() const { return *store_; }
  // The OCDBT database (null without OCDBT).
  const OcdbtReader* ocdbt() const { return ocdbt_; }

 private:
  ItemLocation location_;
  TreeMetadata tree_;
  bool uses_ocdbt_ = false;
  nlohmann::json checkpoint_metadata_;
  std::unique_ptr<KvStore> store_;
  const OcdbtReader* ocdbt_ = nullptr;  // store_, when it is one
  std::vector<ArrayEntry> arrays_;
};

// The zstd level ckptbridge writes Orbax chunks with unless told otherwise
// (`--zstd-level`). Measured on 200 MB of bf16 weights: level 1 gives 1.298x
// at 590 MB/s, level 3 (TensorStore's zarr v3 default) 1.297x at 302 MB/s:
// the exponent bytes are what compresses, and the longer match search of
// level 3 finds nothing in the mantissas.
inline constexpr int kDefaultZstdLevel = 1;
// The levels `--zstd-level` accepts (zstd's positive levels).
inline constexpr int kMinWriteZstdLevel = 1;
inline constexpr int kMaxWriteZstdLevel = 22;

struct WriteOptions {
  // One OCDBT database at the item directory (what Orbax and MaxText write
  // by default); false: one file per key below the item directory.
  bool ocdbt = false;
  // zarr v3 arrays (MaxText's default); false: zarr v2 (Orbax's v0 API
  // default).
  bool zarr3 = true;
  // zstd level of every chunk, recorded in each array's zarr.json/.zarray.
  // TensorStore writes 3 into zarr v3 arrays and 1 into zarr v2 ones; readers
  // ignore it (a zstd frame decodes the same whatever level made it). The
  // default is 1 for both: on bf16 weights it compresses as well as 3
  // (within 0.1%) at about twice the speed, see kDefaultZstdLevel.
  int zstd_level = kDefaultZstdLevel;
  int64_t step = 0;
  // OCDBT only: data files roll over past this size (Orbax's
  // ocdbt_target_data_file_size) and B+tree nodes split at this estimated
  // size (TensorStore's max_decoded_node_bytes, as Orbax configures it).
  // Tests lower them to get several data files and interior nodes.
  uint64_t ocdbt_target_data_file_size = uint64_t{2} << 30;
  uint32_t ocdbt_max_decoded_node_bytes = 100000000;
  // Where `root` will live once the caller renames it into place; only used
  // for the informational text of commit_success.txt. Empty: `root` itself.
  std::filesystem::path final_root;
  // Resume (host/engine/journal.h): `root` holds what an interrupted run of
  // the same conversion wrote. Its chunks stay until rewritten or
  // AdoptChunk()ed; the metadata files it may have finished are removed,
  // since Finish() writes them again.
  bool resume = false;
};

// Writes a MaxText-style checkpoint below `root`: <root>/<step>/items/...
// Arrays are declared first (AddArray writes their metadata), chunks are then
// written in any order from any thread, and Finish() writes, in this order,
// the OCDBT B+tree and manifest.ocdbt (with OCDBT), _METADATA, the step's
// _CHECKPOINT_METADATA and commit_success.txt files. `root` should be a
// staging directory that the caller renames into place afterwards.
//
// With OCDBT a chunk value larger than 1024 bytes goes to a data file as
// soon as WriteChunk() encodes it (memory does not grow with the model);
// smaller values (array metadata, tiny chunks) are kept until Finish().
class CheckpointWriter {
 public:
  static Result<std::unique_ptr<CheckpointWriter>> Create(const std::filesystem::path& root,
                                                          const WriteOptions& options);

  const std::filesystem::path& item_dir() const { return item_dir_; }

  // Declares an array leaf at key path `keys` (dict keys) and writes its
  // zarr metadata. Returns the metadata (for ChunkKey/ChunkBytes).
  Result<ArrayMetadata> AddArray(const std::vector<std::string>& keys, DType dtype,
                                 const Shape& shape, const Shape& chunk_shape);
  // Writes chunk `index` of array `name` (keys joined with '.'); `chunk_bytes`
  // is the full chunk in C order. Thread-safe.
  Status WriteChunk(std::string_view name, const std::vector<int64_t>& index,
                    std::string_view chunk_bytes);

  // One chunk stored, as the chunk observer sees it (valid during the call).
  struct WrittenChunk {
    std::string_view array;
    const std::vector<int64_t>& index;
    std::string_view key;    // the store key, "<array>/<chunk key>"
    std::string_view value;  // the encoded value as stored
    // With OCDBT, the entry as stored (inline value or data file range);
    // null without OCDBT, where the value is the file <item_dir>/<key>.
    const ocdbt::LeafEntry* entry = nullptr;
  };
  // Called after every chunk stored, on the writing thread (a resume
  // journal checksums and records it). Set it before the first write.
  void set_chunk_observer(std::function<void(const WrittenChunk&)> observer) {
    chunk_observer_ = std::move(observer);
  }
  // Counts chunk `index` of array `name` as written: an interrupted run
  // stored it (as `entry` with OCDBT, as the file <item_dir>/<key> without)
  // and the caller verified it since. Errors as WriteChunk's.
  Status AdoptChunk(std::string_view name, const std::vector<int64_t>& index,
                    const ocdbt::LeafEntry* entry);
  // A Python int leaf (stored as a rank-0 int64 array, value_type "scalar").
  Status AddScalar(const std::vector<std::string>& keys, int64_t value);
  // An empty dict leaf (value_type "Dict", skip_deserialize true).
  Status AddEmptyDict(const std::vector<std::string>& keys);
  // Writes _METADATA (custom_metadata as given), <step>/_CHECKPOINT_METADATA
  // (with the same custom_metadata) and commit_success.txt in the step and
  // item directories. Fails with FailedPrecondition, writing nothing, while
  // any chunk of a declared array is unwritten: _METADATA says
  // store_array_data_equal_to_fill_value, so Orbax would refuse the item.
  Status Finish(const nlohmann::json& custom_metadata);

 private:
  WriteOptions options_;
  std::filesystem::path step_dir_;
  std::filesystem::path item_dir_;
  std::unique_ptr<KvStore> store_;
  OcdbtWriter* ocdbt_ = nullptr;  // store_, when writing OCDBT
  std::mutex mutex_;
  std::map<std::string, ArrayMetadata> arrays_;
  std::vector<LeafMetadata> leaves_;
  int64_t init_timestamp_nsecs_ = 0;

  // Records a leaf (and, for arrays, its metadata) after checking that its
  // key path clashes with no other leaf.
  Status AddLeaf(LeafMetadata leaf, const ArrayMetadata* array);
  // Guarded by mutex_: which chunks of each array were written (C order), so
  // Finish() can refuse an item Orbax would fail to read.
  std::map<std::string, std::vector<bool>> written_;
  bool finished_ = false;
  std::function<void(const WrittenChunk&)> chunk_observer_;
  // The metadata of declared array `name` after checking that `index` lies
  // in its chunk grid, and the index's position in C order.
  Result<std::pair<const ArrayMetadata*, size_t>> FindChunk(std::string_view name,
                                                            const std::vector<int64_t>& index);
};

}  // namespace ckptbridge::orbax

#endif  // CKPTBRIDGE_HOST_FORMATS_ORBAX_CHECKPOINT_H_
