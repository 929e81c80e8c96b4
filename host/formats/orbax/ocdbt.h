// host/formats/orbax/ocdbt.h - an OCDBT database directory as a KvStore.
//
// With OCDBT (Orbax's default, `use_ocdbt`), all keys of an item
// (`<param>/zarr.json`, `<param>/c/0/1`, ...) live in one database at the
// item directory:
//
//   <item>/manifest.ocdbt             config + the latest version's root
//   <item>/d/<32 hex>                 B+tree nodes and values > 1024 bytes
//   <item>/ocdbt.process_<N>/d/...    per-host data files that the top-level
//                                     tree points into (written by Orbax)
//
// OcdbtReader opens a database read-only and answers lookups; OcdbtWriter
// builds a new one the way TensorStore would, so Orbax can read it. Byte
// layouts are in ocdbt_format.h; the algorithm in
// shared/docs/orbax-format.md §4.10-4.12.
#ifndef CKPTBRIDGE_HOST_FORMATS_ORBAX_OCDBT_H_
#define CKPTBRIDGE_HOST_FORMATS_ORBAX_OCDBT_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "host/base/file.h"
#include "host/base/status.h"
#include "host/formats/orbax/kvstore.h"
#include "host/formats/orbax/ocdbt_format.h"

namespace ckptbridge::orbax {

// A read-only view of the latest version of an OCDBT database.
//
// Open() reads `manifest.ocdbt` (for a numbered-kind database, the
// `manifest.<16 hex>` with the highest generation), then walks the whole
// B+tree of the latest version and keeps every key with its inline value or
// the location of its out-of-line value. Out-of-line values are read from
// their data file on each Read().
//
// Nothing the database says is trusted: every envelope's magic, length,
// version and CRC-32C are checked, every count, length and offset is
// bounds-checked, node heights must descend by one, keys must increase
// across the whole tree, and every data file path must stay inside the
// database directory (no "..", ".", empty or absolute component, no symlink
// out of it) - a node
// reached through a data file whose base path is B resolves its own paths
// below B (the transitive path, how Orbax's merged top-level database points
// into `ocdbt.process_N/d/...`). No node may be reached twice (a tree shares
// none, and a hostile DAG would multiply the leaves) and the keys of the tree
// may add up to at most 1 GiB (256 MiB per node). Violations are DataLoss
// errors that name the file (and offset) at fault.
class OcdbtReader final : public KvStore {
 public:
  // Errors: NotFound "<dir>/manifest.ocdbt: no such file" when there is no
  // manifest; DataLoss for anything corrupt; IoError when a read fails.
  static Result<std::unique_ptr<OcdbtReader>> Open(const std::filesystem::path& dir);

  // The value of `key`; NotFound when the database has no such key. Reading
  // an out-of-line value checks that its range lies inside its data file
  // (DataLoss otherwise, and DataLoss when the data file is missing).
  // Thread-safe.
  Result<std::string> Read(std::string_view key) const override;
  Status ReadInto(std::string_view key, ScratchBuffer& out) const override;
  Result<std::optional<MappedRegion>> Map(std::string_view key) const override;
  Result<bool> Contains(std::string_view key) const override;
  // Always FailedPrecondition: the reader never changes a database.
  Status Write(std::string_view key, std::string_view value) override;
  // "<dir> OCDBT key 'k'", plus where an out-of-line value is stored.
  std::string Describe(std::string_view key) const override;
  void Prefetch(std::string_view key) const override;

  // Keys starting with `prefix`, sorted by bytes.
  std::vector<std::string> ListKeys(std::string_view prefix = "") const;
  // Total size of the values whose keys start with `prefix` (what they
  // occupy in the database, not counting B+tree nodes).
  uint64_t StoredBytes(std::string_view prefix) const;

  struct ValueLocation {
    bool out_of_line = false;
    uint64_t size = 0;
    std::filesystem::path file;  // out-of-line only: the data file
    uint64_t offset = 0;         // out-of-line only
  };
  // Where the value of `key` lives; NotFound when there is none.
  Result<ValueLocation> Locate(std::string_view key) const;

  const std::filesystem::path& dir() const { return dir_; }
  // The manifest the current version came from (for a numbered database,
  // the numbered one) and its path.
  const ocdbt::Manifest& manifest() const { return manifest_; }
  const std::filesystem::path& manifest_path() const { return manifest_path_; }
  // The latest version: generation, root, statistics, commit time.
  const ocdbt::BtreeGeneration& version() const { return manifest_.versions.back(); }
  // How many B+tree nodes the latest version has (every one was read).
  size_t num_nodes() const { return num_nodes_; }

 private:
  // Read and ReadInto: the value at `key` into the bytes `allocate(size)`
  // returns.
  Status ReadValue(std::string_view key, const std::function<char*(size_t)>& allocate) const;
  struct Value {
    bool out_of_line = false;
    std::string data;  // inline value, or the data file path below dir_
    uint64_t offset = 0;
    uint64_t length = 0;
  };
  struct Walk;

  explicit OcdbtReader(std::filesystem::path dir) : dir_(std::move(dir)) {}
  Status LoadManifest();
  Status LoadTree();

  std::filesystem::path dir_;
  std::filesystem::path manifest_path_;
  ocdbt::Manifest manifest_;
  std::map<std::string, Value, std::less<>> values_;
  size_t num_nodes_ = 0;
};

struct OcdbtWriteOptions {
  // A data file is closed and a new one started once the next value would
  // take it past this size (Orbax's ocdbt_target_data_file_size: 2 GiB). A
  // value larger than this gets a file of its own.
  uint64_t target_data_file_size = uint64_t{2} << 30;
  // TensorStore splits B+tree nodes so that each one's estimated decoded
  // size stays below this; recorded in the config. Orbax: 100000000. Small
  // values (tests) give many nodes and interior levels.
  uint32_t max_decoded_node_bytes = 100000000;
  // Values up to this size stay inline in the B+tree leaves (Orbax: 1024).
  uint32_t max_inline_value_bytes = 1024;
  // Resume (host/engine/journal.h): `dir` holds the database of an
  // interrupted run. Its data files stay (values in them are Adopt()ed);
  // a manifest it may have finished is removed, since a new one is written.
  bool resume = false;
};

// Builds a new OCDBT database in a directory, as one version (generation 1)
// written at once - what Orbax's merged top-level database looks like,
// without per-process databases.
//
// Write() may be called from any thread. A value larger than
// max_inline_value_bytes is appended to the current data file `d/<32 hex>`
// right away (only its location is kept); smaller values stay in memory.
// Finish() sorts the keys, encodes the B+tree nodes as TensorStore does
// (ocdbt_format.h: EncodeLeafNodes / EncodeInteriorNodes), appends them to the
// data file, and writes `manifest.ocdbt` last, atomically (temporary file
// and rename), so a database without its manifest is visibly unfinished.
class OcdbtWriter final : public KvStore {
 public:
  // Creates `dir` (and `dir/d`). FailedPrecondition when `dir` already holds
  // a manifest.ocdbt.
  static Result<std::unique_ptr<OcdbtWriter>> Create(const std::filesystem::path& dir,
                                                     const OcdbtWriteOptions& options = {});

  // Stores `value` at `key` (replacing an earlier value). Thread-safe.
  // FailedPrecondition after Finish(); InvalidArgument for an empty key or
  // one over 65535 bytes.
  Status Write(std::string_view key, std::string_view value) override;
  // Write() that also says where the value went: inline in the entry, or
  // its data file range (relative to dir()).
  Result<ocdbt::LeafEntry> WriteEntry(std::string_view key, std::string_view value);
  // Takes over an entry an interrupted run wrote (its value inline, or in a
  // data file below dir() that the caller has verified), as if written now.
  // InvalidArgument for a data file path that leaves dir().
  Status Adopt(ocdbt::LeafEntry entry);
  // Values written so far (out-of-line ones are read back from their file).
  Result<std::string> Read(std::string_view key) const override;
  Result<bool> Contains(std::string_view key) const override;
  std::string Describe(std::string_view key) const override;

  // Writes the B+tree and the manifest. Call once, after every Write() has
  // returned. The writer accepts nothing afterwards.
  Status Finish();

  const std::filesystem::path& dir() const { return dir_; }
  const ocdbt::Config& config() const { return config_; }
  // After Finish(): the version written (root, height, statistics).
  const ocdbt::BtreeGeneration& version() const { return version_; }
  // The data files created so far, relative to dir() ("d/<32 hex>").
  std::vector<std::string> DataFiles() const;

 private:
  struct DataFile {
    std::string relative_path;
    OutputFile file;
    uint64_t size = 0;  // bytes reserved so far
  };

  OcdbtWriter(std::filesystem::path dir, const OcdbtWriteOptions& options);
  // Reserves `bytes.size()` bytes at the end of the calling thread's current
  // data file (starting a new one when needed) under the lock, then writes
  // them outside it, so values from many threads are written in parallel.
  Result<ocdbt::DataRef> Append(std::string_view bytes);

  std::filesystem::path dir_;
  OcdbtWriteOptions options_;
  ocdbt::Config config_;
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<DataFile>> files_;  // guarded by mutex_, in creation order
  // Each writing thread's current data file (guarded by mutex_).
  std::map<std::thread::id, std::shared_ptr<DataFile>> current_;
  std::map<std::string, ocdbt::LeafEntry, std::less<>> entries_;  // guarded by mutex_
  bool finished_ = false;                                         // guarded by mutex_
  ocdbt::BtreeGeneration version_;
};

}  // namespace ckptbridge::orbax

#endif  // CKPTBRIDGE_HOST_FORMATS_ORBAX_OCDBT_H_
